package rsagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

// A fresh deployment under OrderedReady: mongo-0 initiates exactly once after
// the settle delay, then mongo-1 and mongo-2 add themselves in order, one
// member per reconfig, under their stable DNS names.
func TestFreshBootstrapInitiatesOnceAndAddsInOrder(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	a0 := c.agent(0)
	step(t, a0, ActionSettling)
	c.advance(20 * time.Second)
	step(t, a0, ActionSettling)
	c.advance(11 * time.Second)
	step(t, a0, ActionInitiated)
	for range 3 {
		step(t, a0, ActionMember)
		c.advance(time.Minute)
	}

	for i := 1; i <= 2; i++ {
		c.pod(i)
		a := c.agent(i)
		out := step(t, a, ActionAdded)
		if !strings.Contains(out.Detail, fmt.Sprintf("_id %d", i)) {
			t.Errorf("mongo-%d added as %q, want _id %d", i, out.Detail, i)
		}
		step(t, a, ActionMember)
		step(t, a0, ActionMember)
	}

	if len(c.initiates) != 1 {
		t.Errorf("initiates = %v, want exactly one", c.initiates)
	}
	wantReconfigs := []string{
		"mongo-0.mongo.default.svc.cluster.local:27017: v2 +[{1 mongo-1.mongo.default.svc.cluster.local:27017 false}] -[]",
		"mongo-0.mongo.default.svc.cluster.local:27017: v3 +[{2 mongo-2.mongo.default.svc.cluster.local:27017 false}] -[]",
	}
	if !slices.Equal(c.reconfigs, wantReconfigs) {
		t.Errorf("reconfigs:\n got %q\nwant %q", c.reconfigs, wantReconfigs)
	}
	got := memberHosts(c.config())
	want := []string{
		"0=mongo-0.mongo.default.svc.cluster.local:27017",
		"1=mongo-1.mongo.default.svc.cluster.local:27017",
		"2=mongo-2.mongo.default.svc.cluster.local:27017",
	}
	if !slices.Equal(got, want) {
		t.Errorf("members %v, want %v", got, want)
	}
}

// Scaling 3 → 5 adds mongo-3 and mongo-4, each through the current primary.
func TestScaleUpAddsNewMembers(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(3)
	c.failover(c.host(2)) // whoever is primary: the joiners must find it
	for i := 3; i <= 4; i++ {
		c.pod(i)
		a := c.agent(i)
		out := step(t, a, ActionAdded)
		if !strings.Contains(out.Detail, "through "+c.host(2)) {
			t.Errorf("mongo-%d: %q, want it added through the primary %s", i, out.Detail, c.host(2))
		}
		step(t, a, ActionMember)
	}
	if n := len(c.config().Members); n != 5 {
		t.Errorf("%d members, want 5", n)
	}
}

// Ordinals above 0 never initiate, however long they wait.
func TestOnlyOrdinalZeroInitiates(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	c.pod(1)
	a1 := c.agent(1)
	for range 5 {
		step(t, a1, ActionWaitSet)
		c.advance(time.Hour)
	}
	if len(c.initiates) != 0 {
		t.Fatalf("initiates = %v, want none", c.initiates)
	}
}

// Every restart of the agent process, at every point of a bootstrap, ends in
// the same set: one initiate, one reconfig per member.
func TestRestartAtAnyRoundIsIdempotent(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	step(t, c.agent(0), ActionSettling)
	// A restart during the countdown starts it over: never initiates early.
	c.advance(29 * time.Second)
	a0 := c.agent(0)
	step(t, a0, ActionSettling)
	c.advance(29 * time.Second)
	step(t, a0, ActionSettling)
	c.advance(2 * time.Second)
	step(t, a0, ActionInitiated)
	step(t, c.agent(0), ActionMember)

	c.pod(1)
	step(t, c.agent(1), ActionAdded)
	step(t, c.agent(1), ActionMember)
	step(t, c.agent(0), ActionMember)
	if len(c.initiates) != 1 || len(c.reconfigs) != 1 {
		t.Errorf("initiates %v, reconfigs %v: want one each", c.initiates, c.reconfigs)
	}
}

// replSetInitiate succeeded but its reply was lost: the restarted agent sees a
// member; and if it ever sends a second initiate, AlreadyInitialized counts as
// done, not as a failure.
func TestRestartAfterLostInitiateReply(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	c.onInitiate = func(string, Config) (bool, error) { return true, errors.New("connection reset by peer") }
	a0 := c.agent(0)
	step(t, a0, ActionSettling)
	c.advance(31 * time.Second)
	if out, err := a0.Step(context.Background()); err == nil || out.Action != ActionWaitLocal {
		t.Fatalf("lost reply: %v, %v; want wait-local with an error", out, err)
	}
	c.onInitiate = nil
	step(t, c.agent(0), ActionMember)

	// The AlreadyInitialized path itself: hello still looked empty, but by
	// the time replSetInitiate arrives mongod has a config.
	n := c.nodes[c.host(0)]
	stored := n.cfg
	n.cfg = nil
	a := c.agent(0)
	step(t, a, ActionSettling)
	c.advance(31 * time.Second)
	c.onInitiate = func(string, Config) (bool, error) {
		n.cfg = stored
		return false, fmt.Errorf("(AlreadyInitialized) already initialized: %w", ErrAlreadyInitialized)
	}
	out := step(t, a, ActionInitiated)
	if !strings.Contains(out.Detail, "already initialized") {
		t.Errorf("detail %q, want the AlreadyInitialized path", out.Detail)
	}
	if len(c.initiates) != 1 {
		t.Errorf("initiates = %v, want one", c.initiates)
	}
}

// replSetReconfig was applied but the reply was lost, and the new member has
// not heard of it yet: the restarted agent finds itself in the config and
// does not add itself a second time.
func TestRestartAfterLostReconfigReply(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(2)
	c.propagate = false
	c.pod(2)
	c.onReconfig = func(string, Config) (bool, error) { return true, errors.New("i/o timeout") }
	if out, err := c.agent(2).Step(context.Background()); err == nil || out.Action != ActionReconfigErr {
		t.Fatalf("lost reply: %v, %v; want reconfig-failed with an error", out, err)
	}
	c.onReconfig = nil
	a2 := c.agent(2)
	step(t, a2, ActionListed)
	step(t, a2, ActionListed)
	c.sync() // heartbeats deliver the config
	step(t, a2, ActionMember)
	if len(c.reconfigs) != 2 {
		t.Errorf("reconfigs = %v, want 2 (mongo-1, mongo-2 once each)", c.reconfigs)
	}
}

// The primary steps down between the joiner's getConfig and its reconfig:
// the reconfig fails with NotWritablePrimary and the next round goes through
// the new primary.
func TestPrimaryFailoverDuringJoin(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(3)
	c.pod(3)
	c.onReconfig = func(host string, _ Config) (bool, error) {
		c.primary = c.host(1) // election: mongo-1 wins
		return true, nil      // the old primary now refuses: applyReconfig checks
	}
	a3 := c.agent(3)
	out, err := a3.Step(context.Background())
	if out.Action != ActionReconfigErr || err == nil || !strings.Contains(err.Error(), "NotWritablePrimary") {
		t.Fatalf("got %v, %v; want reconfig-failed with NotWritablePrimary", out, err)
	}
	c.onReconfig = nil
	out = step(t, a3, ActionAdded)
	if !strings.Contains(out.Detail, "through "+c.host(1)) {
		t.Errorf("%q: want the reconfig sent to the new primary %s", out.Detail, c.host(1))
	}
	step(t, a3, ActionMember)
}

// The primary's pod is gone and no election has finished: the joiner waits
// instead of guessing, and joins once a primary exists.
func TestJoinWaitsForElection(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(3)
	c.deletePod(0) // was primary
	c.pod(3)
	a3 := c.agent(3)
	step(t, a3, ActionWaitPrimary)
	c.failover(c.host(2))
	step(t, a3, ActionAdded)
	step(t, a3, ActionMember)

	// Peers may still name a primary that no longer answers: no reconfig is
	// attempted anywhere else, the round just fails and retries.
	c2 := newCluster(t)
	c2.bootstrap(3)
	c2.nodes[c2.host(0)].up = false // mongod hung; peers have not noticed yet
	c2.pod(3)
	out, err := c2.agent(3).Step(context.Background())
	if out.Action != ActionWaitPrimary || !errors.Is(err, errConnRefused) {
		t.Fatalf("got %v, %v; want wait-primary with the dial error", out, err)
	}
	if len(c2.reconfigs) != 2 {
		t.Errorf("reconfigs = %v, want only the bootstrap's", c2.reconfigs)
	}
}

// Scale-down is the operator's job: the agent never removes a member, neither
// one whose pod is gone nor one an operator removed, and it does not re-add a
// member that was removed with rs.remove.
func TestScaleDownLeftToOperator(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(5)
	before := len(c.reconfigs)

	// Documented procedure: rs.remove the highest ordinal, then scale.
	c.operatorRemove(c.host(4))
	a4 := c.agent(4)
	for range 3 {
		step(t, a4, ActionNotMember)
		c.advance(time.Minute)
	}
	c.deletePod(4)

	// Scaled without rs.remove: mongo-3's pod is gone, still in the config.
	c.deletePod(3)
	for i := range 3 {
		step(t, c.agent(i), ActionMember)
	}
	if got := len(c.reconfigs) - before; got != 1 {
		t.Errorf("reconfigs after bootstrap = %v, want only the operator's rs.remove", c.reconfigs[before:])
	}
	if n := len(c.config().Members); n != 4 {
		t.Errorf("%d members, want 4: the agent removes nobody", n)
	}

	// Scaling back up with retained claims: mongo-3 is still listed and just
	// comes back; mongo-4 was removed and is not re-added by the agent.
	c.pod(3)
	c.pod(4)
	step(t, c.agent(3), ActionMember)
	step(t, c.agent(4), ActionNotMember)
	if got := len(c.reconfigs) - before; got != 1 {
		t.Errorf("reconfigs = %v: the agent re-added a removed member", c.reconfigs[before:])
	}
}

// Edge case: mongo-0 comes back with an empty volume while the set lives on
// in mongo-1 and mongo-2. It must not create a second rs0; its name is still
// in the config, so mongod rejoins by itself through heartbeats.
func TestEmptyOrdinalZeroWithLiveSetDoesNotInitiate(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(3)
	c.deletePod(0)
	c.failover(c.host(1))
	c.propagate = false
	c.wipe(0)
	c.pod(0)
	a0 := c.agent(0)
	for range 3 {
		out := step(t, a0, ActionListed)
		if !strings.Contains(out.Detail, "_id 0") {
			t.Errorf("detail %q, want its existing member _id 0", out.Detail)
		}
		c.advance(time.Minute)
	}
	c.sync()
	step(t, a0, ActionMember)
	if len(c.initiates) != 1 || len(c.reconfigs) != 2 {
		t.Errorf("initiates %v, reconfigs %v: want only the bootstrap's", c.initiates, c.reconfigs)
	}
}

// Edge case: mongo-0 is empty and its peers' pods exist but their mongods do
// not answer (restarting, network partition). An unreachable peer may hold
// the set, so mongo-0 waits, however long.
func TestEmptyOrdinalZeroWithUnreachablePeersWaits(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(3)
	c.deletePod(0)
	c.wipe(0)
	c.nodes[c.host(1)].up = false
	c.nodes[c.host(2)].up = false
	c.pod(0)
	a0 := c.agent(0)
	for range 5 {
		out := step(t, a0, ActionWaitPeers)
		if !strings.Contains(out.Detail, c.host(1)+" exists but did not answer") {
			t.Errorf("detail %q, want mongo-1 named as unreachable", out.Detail)
		}
		c.advance(10 * time.Minute)
	}
	// One peer answering is not enough while the other is unknown.
	c.nodes[c.host(1)].up, c.nodes[c.host(1)].loading = true, true
	step(t, a0, ActionWaitPeers)
	if len(c.initiates) != 1 {
		t.Errorf("initiates = %v, want only the bootstrap's", c.initiates)
	}
}

// Edge case: a peer with data is still in STARTUP, so replSetGetStatus says
// NotYetInitialized; its stored config makes it non-empty and blocks
// initiation.
func TestPeerLoadingStoredConfigBlocksInitiate(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(2)
	c.deletePod(0)
	c.deletePod(1)
	c.wipe(0)
	c.pod(0)
	n1 := c.pod(1)
	n1.loading = true
	a0 := c.agent(0)
	for range 3 {
		out := step(t, a0, ActionWaitPeers)
		if !strings.Contains(out.Detail, "mongo-1") {
			t.Errorf("detail %q, want mongo-1 named as the blocker", out.Detail)
		}
		c.advance(time.Minute)
	}
	if len(c.initiates) != 1 {
		t.Errorf("initiates = %v, want only the bootstrap's", c.initiates)
	}
}

// A DNS failure other than "no such host" is not absence: it blocks.
func TestDNSFailureBlocksInitiate(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	c.dnsErr[c.id.DNSName(1)] = errors.New("i/o timeout")
	a0 := c.agent(0)
	for range 3 {
		step(t, a0, ActionWaitPeers)
		c.advance(time.Minute)
	}
	delete(c.dnsErr, c.id.DNSName(1))
	step(t, a0, ActionSettling)
	c.advance(31 * time.Second)
	step(t, a0, ActionInitiated)
}

// The countdown restarts whenever the rule stops holding: a peer that shows
// up with data during the countdown turns initiation into joining.
func TestCountdownResetsWhenAPeerAppears(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(2)
	c.deletePod(0)
	c.deletePod(1)
	c.wipe(0)
	c.pod(0)
	a0 := c.agent(0)
	step(t, a0, ActionSettling) // the one case DNS cannot tell from a fresh start
	c.advance(20 * time.Second)
	c.pod(1) // mongo-1 comes back with its data, becomes primary of what is left
	c.failover(c.host(1))
	step(t, a0, ActionListed)
	c.advance(time.Hour)
	step(t, a0, ActionListed)
	if len(c.initiates) != 1 {
		t.Errorf("initiates = %v, want only the bootstrap's", c.initiates)
	}
}

// An unreachable-then-empty peer: the countdown starts only when all peers
// answer, and runs its full length from there.
func TestCountdownStartsWhenLastPeerAnswers(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	n1 := c.pod(1) // Parallel pod management, say
	n1.up = false
	a0 := c.agent(0)
	step(t, a0, ActionWaitPeers)
	c.advance(time.Hour)
	n1.up = true
	step(t, a0, ActionSettling)
	c.advance(29 * time.Second)
	step(t, a0, ActionSettling)
	c.advance(2 * time.Second)
	step(t, a0, ActionInitiated)
	step(t, c.agent(1), ActionAdded)
}

// The documented limit: mongo-0 empty and alone in DNS looks exactly like a
// fresh deployment, so INITIATE=auto initiates; INITIATE=never does not.
func TestLoneEmptyOrdinalZero(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	never := c.agent(0, func(s *Settings) { s.Initiate = InitiateNever })
	for range 3 {
		step(t, never, ActionWaitSet)
		c.advance(time.Hour)
	}
	if len(c.initiates) != 0 {
		t.Fatalf("INITIATE=never initiated: %v", c.initiates)
	}
	auto := c.agent(0)
	step(t, auto, ActionSettling)
	c.advance(31 * time.Second)
	step(t, auto, ActionInitiated)
}

// mongod refuses two members that map to one node; a member registered by
// hand under a short name (the book's rs.initiate) counts as this pod.
func TestShortNameMemberCountsAsSelf(t *testing.T) {
	c := newCluster(t)
	n0, _ := c.pod(0), c.pod(1)
	// mongo-0 (the fake finds its own entry by FQDN) initiated by hand with
	// mongo-1 under its short name; mongo-1 has not received the config yet.
	n0.cfg = &Config{Name: "rs0", Version: 2, Members: []Member{
		{ID: 0, Host: n0.host}, {ID: 1, Host: "mongo-1.mongo:27017"},
	}}
	c.primary = n0.host
	step(t, c.agent(1), ActionListed)
	if len(c.reconfigs) != 0 {
		t.Errorf("reconfigs = %v, want none", c.reconfigs)
	}
}

// The ordinal is the preferred _id; if a hand-made config took it, the next
// free one past the highest is used.
func TestMemberIDCollision(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(2)
	// Someone added an arbiter-like member by hand with _id 2.
	p := c.nodes[c.primary]
	p.cfg.Members = append(p.cfg.Members, Member{ID: 2, Host: "hidden-0.backup.default.svc.cluster.local:27017"})
	p.cfg.Members = append(p.cfg.Members, Member{ID: 7, Host: "hidden-1.backup.default.svc.cluster.local:27017"})
	p.cfg.Version++
	c.sync()
	c.pod(2)
	out := step(t, c.agent(2), ActionAdded)
	if !strings.Contains(out.Detail, "_id 8") {
		t.Errorf("detail %q, want _id 8", out.Detail)
	}
}

// MongoDB allows 7 voting members; the 8th joins with votes 0, priority 0.
func TestEighthMemberJoinsNonVoting(t *testing.T) {
	c := newCluster(t)
	c.bootstrap(7)
	c.pod(7)
	out := step(t, c.agent(7), ActionAdded)
	if !strings.Contains(out.Detail, "non-voting") {
		t.Errorf("detail %q, want non-voting", out.Detail)
	}
	last := c.config().Members[7]
	if !last.NonVoting || last.ID != 7 {
		t.Errorf("8th member %+v, want _id 7 non-voting", last)
	}
}

// A peer (or the local mongod) in another set is a misconfiguration: neither
// initiate nor join.
func TestForeignSetIsRefused(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	n1 := c.pod(1)
	n1.cfg = &Config{Name: "other", Version: 1, Members: []Member{{ID: 0, Host: n1.host}}}
	c.primary = n1.host
	a0 := c.agent(0)
	for range 3 {
		step(t, a0, ActionForeignSet)
		c.advance(time.Minute)
	}
	step(t, c.agent(1), ActionForeignSet)
	if len(c.initiates)+len(c.reconfigs) != 0 {
		t.Errorf("initiates %v, reconfigs %v: want none", c.initiates, c.reconfigs)
	}
}

func TestLocalMongodDown(t *testing.T) {
	c := newCluster(t)
	n := c.pod(0)
	n.up = false
	out, err := c.agent(0).Step(context.Background())
	if out.Action != ActionWaitLocal || !errors.Is(err, errConnRefused) {
		t.Fatalf("got %v, %v; want wait-local wrapping the dial error", out, err)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	c := newCluster(t)
	c.pod(0)
	var logs strings.Builder
	a := New(c.agent(0).s, c, c, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after its context ended")
	}
	// The same settling outcome repeats with a new countdown; steady states
	// are logged once.
	if !strings.Contains(logs.String(), "action=settling") || !strings.Contains(logs.String(), "msg=stopping") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func TestNewIdentity(t *testing.T) {
	id, err := NewIdentity("my-mongo-12", "mongo", "db", "cluster.local.", 27018)
	if err != nil {
		t.Fatal(err)
	}
	if id.StatefulSet != "my-mongo" || id.Ordinal != 12 {
		t.Errorf("got %+v", id)
	}
	if got, want := id.Self(), "my-mongo-12.mongo.db.svc.cluster.local:27018"; got != want {
		t.Errorf("Self() = %q, want %q", got, want)
	}
	for _, bad := range []string{"mongo", "mongo-", "-1", "mongo-x", "mongo--1"} {
		if _, err := NewIdentity(bad, "mongo", "db", "cluster.local", 27017); err == nil {
			t.Errorf("NewIdentity(%q) accepted", bad)
		}
	}
	if _, err := NewIdentity("mongo-0", "", "db", "cluster.local", 27017); err == nil {
		t.Error("empty service accepted")
	}
	if _, err := NewIdentity("mongo-0", "mongo", "db", "cluster.local", 0); err == nil {
		t.Error("port 0 accepted")
	}
}

func TestIsSelf(t *testing.T) {
	id, err := NewIdentity("mongo-1", "mongo", "default", "cluster.local", 27017)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"mongo-1.mongo.default.svc.cluster.local:27017":  true,
		"MONGO-1.mongo.default.svc.cluster.local.:27017": true,
		"mongo-1.mongo:27017":                            true,
		"mongo-1:27017":                                  true,
		"mongo-1.mongo":                                  true, // port defaults to 27017
		"mongo-1.mongo:27018":                            false,
		"mongo-10.mongo:27017":                           false,
		"mongo-0.mongo.default.svc.cluster.local:27017":  false,
		"10.1.2.3:27017":                                 false,
	} {
		if got := id.IsSelf(host); got != want {
			t.Errorf("IsSelf(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseInitiateMode(t *testing.T) {
	for in, want := range map[string]InitiateMode{"auto": InitiateAuto, "Never": InitiateNever} {
		if got, err := ParseInitiateMode(in); err != nil || got != want {
			t.Errorf("ParseInitiateMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseInitiateMode("always"); err == nil {
		t.Error("always accepted")
	}
}
