//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"k8s.io/client-go/kubernetes"
)

// apiKey is one kind of request the API server served: a verb on a resource
// (subresource included, e.g. "persistentvolumes/status").
type apiKey struct{ verb, resource string }

// apiFigures are the API server's own counts and summed latencies of
// requests, from its /metrics (apiserver_request_duration_seconds), so a
// benchmark can say how many requests of each kind a burst cost and how
// long the server took over them, whoever sent them.
type apiFigures struct {
	count map[apiKey]uint64
	sum   map[apiKey]float64 // seconds
}

// benchResources are the kinds a burst of claims touches.
var benchResources = []string{"persistentvolumes", "persistentvolumeclaims", "events"}

func scrapeAPIFigures(ctx context.Context, client kubernetes.Interface) (*apiFigures, error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("API server /metrics: %w", err)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse API server /metrics: %w", err)
	}
	f := &apiFigures{count: map[apiKey]uint64{}, sum: map[apiKey]float64{}}
	fam := families["apiserver_request_duration_seconds"]
	if fam == nil {
		return nil, fmt.Errorf("API server /metrics has no apiserver_request_duration_seconds")
	}
	for _, m := range fam.GetMetric() {
		labels := labelMap(m)
		if !slices.Contains(benchResources, labels["resource"]) || labels["dry_run"] != "" {
			continue
		}
		k := apiKey{labels["verb"], labels["resource"]}
		if sub := labels["subresource"]; sub != "" {
			k.resource += "/" + sub
		}
		f.count[k] += m.GetHistogram().GetSampleCount()
		f.sum[k] += m.GetHistogram().GetSampleSum()
	}
	return f, nil
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// since returns the requests served between before and f.
func (f *apiFigures) since(before *apiFigures) *apiFigures {
	d := &apiFigures{count: map[apiKey]uint64{}, sum: map[apiKey]float64{}}
	for k, c := range f.count {
		if c > before.count[k] {
			d.count[k] = c - before.count[k]
			d.sum[k] = f.sum[k] - before.sum[k]
		}
	}
	return d
}

// writes lists the write requests (create, update, patch) per claim with the
// server's mean latency of each, e.g. "POST persistentvolumes 1.00 (12 ms)".
func (f *apiFigures) writes(claims int) string {
	var keys []apiKey
	for k := range f.count {
		if k.verb == "POST" || k.verb == "PUT" || k.verb == "PATCH" {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b apiKey) int {
		return strings.Compare(a.resource+" "+a.verb, b.resource+" "+b.verb)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %s %.2f (%.0f ms)", k.verb, k.resource,
			f.perClaim(k.verb, k.resource, claims), f.meanMS(k.verb, k.resource)))
	}
	return strings.Join(parts, ", ")
}

// meanMS is the server's mean latency of verb on resource, 0 without any.
func (f *apiFigures) meanMS(verb, resource string) float64 {
	k := apiKey{verb, resource}
	if f.count[k] == 0 {
		return 0
	}
	return 1000 * f.sum[k] / float64(f.count[k])
}

// perClaim is the number of verb requests on resource per claim.
func (f *apiFigures) perClaim(verb, resource string, claims int) float64 {
	return float64(f.count[apiKey{verb, resource}]) / float64(claims)
}

// writesPerClaim counts the creates, updates and patches of resource (not
// of its subresources) per claim.
func (f *apiFigures) writesPerClaim(resource string, claims int) float64 {
	var w float64
	for _, verb := range []string{"POST", "PUT", "PATCH"} {
		w += f.perClaim(verb, resource, claims)
	}
	return w
}
