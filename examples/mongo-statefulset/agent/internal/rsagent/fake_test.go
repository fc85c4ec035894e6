package rsagent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCluster models a StatefulSet of mongod pods closely enough for the
// agent: DNS names exist while pods exist, mongods answer while up, each node
// stores its own copy of the config, and the primary enforces the rules of a
// non-forced reconfig (version+1, one member added or removed).
type fakeCluster struct {
	t   *testing.T
	mu  sync.Mutex
	id  Identity // template: only Service, Namespace, Domain, Port are used
	now time.Time

	nodes   map[string]*fakeNode // by member host (FQDN:port)
	primary string               // member host of the primary, "" during an election
	// propagate makes every up node listed in a new config learn it at once,
	// as heartbeats do within seconds; tests turn it off to look inside that
	// window and call sync themselves.
	propagate bool
	dnsErr    map[string]error // DNS name → lookup failure

	// Hooks run before the command; returning a non-nil error fails it. An
	// apply-then-fail hook models a reply lost after the server acted.
	onInitiate func(host string, cfg Config) (apply bool, err error)
	onReconfig func(host string, cfg Config) (apply bool, err error)

	initiates []string // "host: members"
	reconfigs []string // "host: v<version> +<added member>"
}

type fakeNode struct {
	pod     string
	host    string
	exists  bool    // the pod exists, so its DNS name resolves
	up      bool    // mongod answers
	cfg     *Config // stored config; nil means an empty data directory
	loading bool    // STARTUP: a stored config not loaded yet
}

func newCluster(t *testing.T) *fakeCluster {
	id, err := NewIdentity("mongo-0", "mongo", "default", "cluster.local", 27017)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeCluster{
		t: t, id: id, now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		nodes: map[string]*fakeNode{}, propagate: true, dnsErr: map[string]error{},
	}
}

func (c *fakeCluster) host(ord int) string { return c.id.Host(ord) }

// pod creates (or re-creates) pod mongo-<ord> with a running, empty mongod
// unless the node already has data (a retained claim).
func (c *fakeCluster) pod(ord int) *fakeNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.host(ord)
	n := c.nodes[h]
	if n == nil {
		n = &fakeNode{pod: fmt.Sprintf("mongo-%d", ord), host: h}
		c.nodes[h] = n
	}
	n.exists, n.up = true, true
	return n
}

// deletePod removes the pod; its data (claim) stays, as with Retain.
func (c *fakeCluster) deletePod(ord int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[c.host(ord)]
	n.exists, n.up = false, false
	if c.primary == n.host {
		c.primary = ""
	}
}

// wipe empties a node's data directory (a lost volume).
func (c *fakeCluster) wipe(ord int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[c.host(ord)].cfg = nil
}

func (c *fakeCluster) node(host string) *fakeNode {
	if p, ok := strings.CutPrefix(host, "local/"); ok {
		for _, n := range c.nodes {
			if n.pod == p {
				return n
			}
		}
		return nil
	}
	return c.nodes[host]
}

func listed(cfg *Config, host string) bool {
	return cfg != nil && slices.ContainsFunc(cfg.Members, func(m Member) bool { return m.Host == host })
}

var errConnRefused = errors.New("connection refused")

func (c *fakeCluster) Resolves(_ context.Context, name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.dnsErr[name]; err != nil {
		return false, err
	}
	for _, n := range c.nodes {
		if n.exists && strings.HasPrefix(n.host, name+":") {
			return true, nil
		}
	}
	return false, nil
}

func (c *fakeCluster) Hello(_ context.Context, host string) (HelloInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(host)
	if n == nil || !n.up {
		return HelloInfo{}, fmt.Errorf("dial %s: %w", host, errConnRefused)
	}
	if n.loading || n.cfg == nil || !listed(n.cfg, n.host) {
		// STARTUP, empty, or REMOVED: no setName.
		return HelloInfo{Empty: n.cfg == nil && !n.loading}, nil
	}
	h := HelloInfo{SetName: n.cfg.Name, Me: n.host, WritablePrimary: c.primary == n.host}
	h.Secondary = !h.WritablePrimary
	h.Primary = c.primary // may lag: peers notice a dead primary only after a timeout
	return h, nil
}

func (c *fakeCluster) Initiate(_ context.Context, host string, cfg Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(host)
	if n == nil || !n.up {
		return fmt.Errorf("dial %s: %w", host, errConnRefused)
	}
	if n.cfg != nil {
		return fmt.Errorf("(AlreadyInitialized) already initialized: %w", ErrAlreadyInitialized)
	}
	if !listed(&cfg, n.host) {
		return fmt.Errorf("(InvalidReplicaSetConfig) no member maps to this node")
	}
	apply, err := true, error(nil)
	if c.onInitiate != nil {
		apply, err = c.onInitiate(n.host, cfg) // err with apply: reply lost
	}
	if apply {
		cp := cfg.Clone()
		n.cfg = &cp
		c.primary = n.host
		c.initiates = append(c.initiates, fmt.Sprintf("%s: %v", n.host, cfg.Members))
	}
	return err
}

func (c *fakeCluster) GetConfig(_ context.Context, host string) (Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(host)
	if n == nil || !n.up {
		return Config{}, fmt.Errorf("dial %s: %w", host, errConnRefused)
	}
	if n.cfg == nil || !listed(n.cfg, n.host) {
		return Config{}, errors.New("(NotYetInitialized) no replset config has been received")
	}
	return n.cfg.Clone(), nil
}

func (c *fakeCluster) Reconfig(_ context.Context, host string, cfg Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(host)
	if n == nil || !n.up {
		return fmt.Errorf("dial %s: %w", host, errConnRefused)
	}
	apply, hookErr := true, error(nil)
	if c.onReconfig != nil {
		apply, hookErr = c.onReconfig(n.host, cfg)
	}
	if !apply {
		return hookErr
	}
	if err := c.applyReconfig(n, cfg); err != nil {
		return err
	}
	return hookErr // non-nil: applied, but the reply was lost
}

func (c *fakeCluster) applyReconfig(n *fakeNode, cfg Config) error {
	if c.primary != n.host {
		return errors.New("(NotWritablePrimary) not primary")
	}
	cur := n.cfg
	if cfg.Version != cur.Version+1 {
		return fmt.Errorf("(NewReplicaSetConfigurationIncompatible) version %d must be %d", cfg.Version, cur.Version+1)
	}
	added, removed := diffMembers(cur.Members, cfg.Members)
	if len(added)+len(removed) != 1 {
		c.t.Errorf("reconfig changes %d members (added %v, removed %v): a non-forced reconfig may change one",
			len(added)+len(removed), added, removed)
		return errors.New("(NewReplicaSetConfigurationIncompatible) more than one member changed")
	}
	ids, hosts := map[int]bool{}, map[string]bool{}
	voting := 0
	for _, m := range cfg.Members {
		if ids[m.ID] || hosts[m.Host] {
			c.t.Errorf("duplicate member _id %d or host %s in %v", m.ID, m.Host, cfg.Members)
		}
		ids[m.ID], hosts[m.Host] = true, true
		if !m.NonVoting {
			voting++
		}
	}
	if voting > MaxVotingMembers {
		return fmt.Errorf("(InvalidReplicaSetConfig) %d voting members, at most %d", voting, MaxVotingMembers)
	}
	cp := cfg.Clone()
	n.cfg = &cp
	c.reconfigs = append(c.reconfigs, fmt.Sprintf("%s: v%d +%v -%v", n.host, cfg.Version, added, removed))
	if c.propagate {
		c.syncLocked()
	}
	return nil
}

func diffMembers(old, cur []Member) (added, removed []Member) {
	for _, m := range cur {
		if !slices.Contains(old, m) {
			added = append(added, m)
		}
	}
	for _, m := range old {
		if !slices.Contains(cur, m) {
			removed = append(removed, m)
		}
	}
	return added, removed
}

// sync delivers the primary's config to every up node it lists (heartbeats),
// and to up nodes it dropped, which then report REMOVED.
func (c *fakeCluster) sync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
}

func (c *fakeCluster) syncLocked() {
	p := c.nodes[c.primary]
	if p == nil || p.cfg == nil {
		return
	}
	for _, n := range c.nodes {
		if n == p || !n.up {
			continue
		}
		if listed(p.cfg, n.host) || listed(n.cfg, n.host) {
			cp := p.cfg.Clone()
			n.cfg = &cp
		}
	}
}

// operatorRemove is rs.remove(host) run by hand on the primary.
func (c *fakeCluster) operatorRemove(host string) {
	c.mu.Lock()
	p := c.nodes[c.primary]
	next := p.cfg.Clone()
	next.Version++
	next.Members = slices.DeleteFunc(next.Members, func(m Member) bool { return m.Host == host })
	c.mu.Unlock()
	if err := c.Reconfig(context.Background(), c.primary, next); err != nil {
		c.t.Fatalf("rs.remove(%s): %v", host, err)
	}
}

// failover makes another member primary (or none, with "").
func (c *fakeCluster) failover(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.primary = host
}

func (c *fakeCluster) config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.host == c.primary {
			return n.cfg.Clone()
		}
	}
	c.t.Fatal("no primary")
	return Config{}
}

func (c *fakeCluster) advance(d time.Duration) { c.now = c.now.Add(d) }

// agent returns the agent of pod mongo-<ord>, as a fresh process would start.
func (c *fakeCluster) agent(ord int, mod ...func(*Settings)) *Agent {
	id, err := NewIdentity(fmt.Sprintf("mongo-%d", ord), "mongo", "default", "cluster.local", 27017)
	if err != nil {
		c.t.Fatal(err)
	}
	s := Settings{
		SetName: "rs0", Self: id, LocalAddr: "local/" + id.PodName, ScanOrdinals: 8,
		Initiate: InitiateAuto, InitiateDelay: 30 * time.Second,
		Interval: time.Millisecond, MemberInterval: time.Millisecond,
	}
	for _, f := range mod {
		f(&s)
	}
	a := New(s, c, c, nil)
	a.now = func() time.Time { return c.now }
	return a
}

// step runs one round and checks the action.
func step(t *testing.T, a *Agent, want Action) Outcome {
	t.Helper()
	out, err := a.Step(context.Background())
	t.Logf("%s: %s: %s (err: %v)", a.s.Self.PodName, out.Action, out.Detail, err)
	if out.Action != want {
		t.Fatalf("%s: action %s, want %s (detail %q, err %v)", a.s.Self.PodName, out.Action, want, out.Detail, err)
	}
	return out
}

// bootstrap brings up pods 0..n-1 the way OrderedReady does: each pod is
// created once the previous one is a member.
func (c *fakeCluster) bootstrap(n int) {
	c.t.Helper()
	c.pod(0)
	a0 := c.agent(0)
	step(c.t, a0, ActionSettling)
	c.advance(31 * time.Second)
	step(c.t, a0, ActionInitiated)
	step(c.t, a0, ActionMember)
	for i := 1; i < n; i++ {
		c.pod(i)
		a := c.agent(i)
		step(c.t, a, ActionAdded)
		step(c.t, a, ActionMember)
	}
}

func memberHosts(cfg Config) []string {
	var hs []string
	for _, m := range cfg.Members {
		hs = append(hs, fmt.Sprintf("%d=%s", m.ID, m.Host))
	}
	return hs
}
