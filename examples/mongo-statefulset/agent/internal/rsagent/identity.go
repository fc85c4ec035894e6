package rsagent

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Identity is what a StatefulSet pod knows about itself without the
// Kubernetes API: its name (hence ordinal) and the headless Service that
// publishes one DNS name per pod.
type Identity struct {
	PodName     string // mongo-2
	StatefulSet string // mongo: the pod name without its ordinal
	Ordinal     int    // 2
	Service     string // headless Service (spec.serviceName)
	Namespace   string
	Domain      string // cluster domain, e.g. cluster.local
	Port        int
}

// NewIdentity derives the StatefulSet name and ordinal from a pod name
// ("mongo-2" → "mongo", 2) and checks the rest.
func NewIdentity(podName, service, namespace, domain string, port int) (Identity, error) {
	i := strings.LastIndexByte(podName, '-')
	if i <= 0 || i == len(podName)-1 || podName[i-1] == '-' {
		return Identity{}, fmt.Errorf("pod name %q is not <statefulset>-<ordinal>", podName)
	}
	ord, err := strconv.Atoi(podName[i+1:])
	if err != nil || ord < 0 {
		return Identity{}, fmt.Errorf("pod name %q does not end in an ordinal", podName)
	}
	for name, v := range map[string]string{"service": service, "namespace": namespace, "domain": domain} {
		if v == "" || strings.ContainsAny(v, "/: ") {
			return Identity{}, fmt.Errorf("%s %q is empty or not a DNS label", name, v)
		}
	}
	if port <= 0 || port > 65535 {
		return Identity{}, fmt.Errorf("port %d out of range", port)
	}
	return Identity{
		PodName: podName, StatefulSet: podName[:i], Ordinal: ord,
		Service: service, Namespace: namespace, Domain: strings.TrimSuffix(domain, "."), Port: port,
	}, nil
}

// DNSName is the stable name of the pod with the given ordinal,
// <sts>-<i>.<svc>.<ns>.svc.<domain>, without a trailing dot.
func (id Identity) DNSName(ordinal int) string {
	return fmt.Sprintf("%s-%d.%s.%s.svc.%s", id.StatefulSet, ordinal, id.Service, id.Namespace, id.Domain)
}

// Host is the replica-set member name of the pod with the given ordinal:
// its stable DNS name and port. Members are registered by these names, never
// by pod IPs, which change on every restart.
func (id Identity) Host(ordinal int) string {
	return net.JoinHostPort(id.DNSName(ordinal), strconv.Itoa(id.Port))
}

// Self is this pod's member name.
func (id Identity) Self() string { return id.Host(id.Ordinal) }

// IsSelf reports whether a member host names this pod: its FQDN, or any
// shorter form starting with the pod name (mongo-1.mongo:27017, as a manual
// rs.initiate in the book registers it). Adding the FQDN next to such a
// short name would fail: mongod refuses two members that map to one node.
func (id Identity) IsSelf(host string) bool {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h, p = host, "27017" // mongod's default when a member omits the port
	}
	if p != strconv.Itoa(id.Port) {
		return false
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == strings.ToLower(id.DNSName(id.Ordinal)) {
		return true
	}
	first, _, _ := strings.Cut(h, ".")
	return first == strings.ToLower(id.PodName)
}
