// Package rsagent decides, from what the local mongod and its peers report,
// whether this pod initiates the replica set, adds itself to it, or leaves it
// alone. All I/O sits behind Admin and Resolver, so every decision is tested
// against fakes; the real implementations live in the mongoadmin package and
// package main.
//
// The rules, in the order Step applies them:
//
//  1. The local mongod is a member of the set (hello reports setName): nothing
//     to do. This covers a pod that comes back with its claim.
//  2. The local mongod has any replica-set state but is not a member (REMOVED
//     after rs.remove, or still loading its stored config): nothing to do. The
//     agent never re-adds a member an operator removed, and never removes one.
//  3. Otherwise the local mongod is empty. If any peer belongs to the set, join
//     it: on the primary, replSetGetConfig, and unless this pod is already
//     listed, replSetReconfig adding exactly this pod (version+1).
//  4. Only ordinal 0 initiates, and only when every peer name that resolves in
//     DNS answered and is empty too (no peer is unreachable, none holds any
//     replica-set data), its own name resolves, and all that has held for
//     InitiateDelay without interruption. See Settings.InitiateDelay and
//     README.md for the one case DNS cannot tell apart.
package rsagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrAlreadyInitialized is returned (wrapped) by Admin.Initiate when the node
// already has a config; the agent treats it as success, which makes a retried
// initiate after a crash harmless.
var ErrAlreadyInitialized = errors.New("replica set already initialized")

// MaxVotingMembers is MongoDB's limit; further members join with votes 0.
const MaxVotingMembers = 7

// HelloInfo is what the agent needs from one node.
type HelloInfo struct {
	// SetName is the set the node is a member of. mongod leaves it out when
	// it has no config and when it is REMOVED from its own config.
	SetName string
	// Me is the node's own member name in the config.
	Me string
	// Primary is the primary's member name as this node sees it, if any.
	Primary         string
	WritablePrimary bool
	Secondary       bool
	// Empty means the node holds no replica-set config at all, not even a
	// stored one it has yet to load: replSetGetStatus says NotYetInitialized
	// AND local.system.replset has no document. mongod also reports
	// NotYetInitialized during STARTUP while it loads a stored config, so the
	// status alone would make a peer with data look new.
	Empty bool
}

// Member is one replica-set member as far as the agent cares.
type Member struct {
	ID        int
	Host      string
	NonVoting bool // votes: 0 (and priority: 0)
}

// Config is a replica-set config. Raw is the document as read, opaque to
// this package: Admin.Reconfig keeps every field and member option it holds
// and changes only the version and the member list.
type Config struct {
	Name    string // _id
	Version int64
	Members []Member
	Raw     any
}

// Clone returns a deep copy of the member list (Raw is shared, never mutated).
func (c Config) Clone() Config {
	c.Members = slices.Clone(c.Members)
	return c
}

// Admin runs the four replica-set commands the agent uses against one node,
// addressed as host:port, always with a direct connection.
type Admin interface {
	Hello(ctx context.Context, host string) (HelloInfo, error)
	// Initiate runs replSetInitiate; a node that already has a config
	// returns an error wrapping ErrAlreadyInitialized.
	Initiate(ctx context.Context, host string, cfg Config) error
	GetConfig(ctx context.Context, host string) (Config, error)
	Reconfig(ctx context.Context, host string, cfg Config) error
}

// Resolver answers whether a DNS name exists. It must return (false, nil)
// only for a definite "no such host"; a timeout or server failure is an
// error, and the agent then treats the peer as present but unreachable.
type Resolver interface {
	Resolves(ctx context.Context, name string) (bool, error)
}

// InitiateMode says whether ordinal 0 may create the set.
type InitiateMode string

const (
	// InitiateAuto lets ordinal 0 initiate under rule 4.
	InitiateAuto InitiateMode = "auto"
	// InitiateNever only ever joins an existing set: for sets that were
	// bootstrapped already, or by hand.
	InitiateNever InitiateMode = "never"
)

// ParseInitiateMode validates an INITIATE value.
func ParseInitiateMode(s string) (InitiateMode, error) {
	switch m := InitiateMode(strings.ToLower(s)); m {
	case InitiateAuto, InitiateNever:
		return m, nil
	}
	return "", fmt.Errorf("initiate mode %q: must be auto or never", s)
}

// Settings configure an Agent.
type Settings struct {
	SetName string
	Self    Identity
	// LocalAddr reaches this pod's own mongod (127.0.0.1:27017): it answers
	// before the pod's DNS name exists, and replSetInitiate must run there.
	LocalAddr string
	// ScanOrdinals bounds peer discovery: ordinals 0..ScanOrdinals-1 are
	// looked up. Names are looked up one by one rather than "until the first
	// miss" because a pod being re-created is briefly missing from DNS.
	ScanOrdinals int
	Initiate     InitiateMode
	// InitiateDelay is how long rule 4 must hold, across consecutive rounds,
	// before ordinal 0 initiates. Peers that were just scheduled get time to
	// appear in DNS and to leave STARTUP.
	InitiateDelay time.Duration
	// Interval is the pause between rounds while the pod is not a member,
	// MemberInterval once it is.
	Interval       time.Duration
	MemberInterval time.Duration
}

// Action names what a round decided.
type Action string

const (
	ActionMember      Action = "member"       // rule 1: nothing to do
	ActionNotMember   Action = "not-member"   // rule 2: left alone on purpose
	ActionWaitLocal   Action = "wait-local"   // local mongod not answering
	ActionForeignSet  Action = "foreign-set"  // a node belongs to another set name
	ActionWaitSet     Action = "wait-set"     // ordinal > 0, or INITIATE=never: no set yet
	ActionWaitPeers   Action = "wait-peers"   // ordinal 0: a peer blocks initiation
	ActionSettling    Action = "settling"     // ordinal 0: rule 4 holds, waiting InitiateDelay
	ActionInitiated   Action = "initiated"    // ordinal 0 ran replSetInitiate
	ActionWaitPrimary Action = "wait-primary" // set exists, primary unknown or unreachable
	ActionListed      Action = "listed"       // in the primary's config, mongod not synced yet
	ActionAdded       Action = "added"        // ran replSetReconfig adding this pod
	ActionReconfigErr Action = "reconfig-failed"
)

// Outcome is the result of one round.
type Outcome struct {
	Action Action
	Detail string
}

// Agent reconciles one pod's membership. Its only state is the start of the
// current initiation countdown, so a restart at any moment at worst restarts
// that countdown.
type Agent struct {
	s     Settings
	admin Admin
	dns   Resolver
	log   *slog.Logger
	now   func() time.Time

	clearSince time.Time // when rule 4 started to hold; zero when it does not
}

// New returns an Agent; log may be nil.
func New(s Settings, admin Admin, dns Resolver, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{s: s, admin: admin, dns: dns, log: log, now: time.Now}
}

// peer is one other ordinal as discovered in a round.
type peer struct {
	ordinal int
	host    string
	info    HelloInfo
	err     error // DNS failure or no answer: present but unknown
}

// Step runs one round and reports what it decided. The error, if any, says
// why the round could not make progress; the next round retries.
func (a *Agent) Step(ctx context.Context) (Outcome, error) {
	local, err := a.admin.Hello(ctx, a.s.LocalAddr)
	if err != nil {
		a.clearSince = time.Time{}
		return Outcome{ActionWaitLocal, "local mongod not answering yet"},
			fmt.Errorf("hello to local mongod %s: %w", a.s.LocalAddr, err)
	}
	switch {
	case local.SetName == a.s.SetName:
		a.clearSince = time.Time{}
		return Outcome{ActionMember, fmt.Sprintf("member of %s as %s (%s)", a.s.SetName, local.Me, stateOf(local))}, nil
	case local.SetName != "":
		return Outcome{ActionForeignSet, fmt.Sprintf("local mongod belongs to set %q, not %q", local.SetName, a.s.SetName)}, nil
	case !local.Empty:
		a.clearSince = time.Time{}
		return Outcome{ActionNotMember, "local mongod has replica-set state but is not a member (removed with rs.remove, or still loading its config); " +
			"the agent never re-adds a removed member: run rs.add on the primary to bring it back"}, nil
	}

	peers := a.survey(ctx)
	var inSet, foreign []peer
	for _, p := range peers {
		switch {
		case p.err != nil:
		case p.info.SetName == a.s.SetName:
			inSet = append(inSet, p)
		case p.info.SetName != "":
			foreign = append(foreign, p)
		}
	}
	if len(inSet) > 0 {
		a.clearSince = time.Time{}
		return a.join(ctx, inSet)
	}
	if len(foreign) > 0 {
		a.clearSince = time.Time{}
		return Outcome{ActionForeignSet, fmt.Sprintf("peer %s belongs to set %q, not %q; refusing to initiate or join",
			foreign[0].host, foreign[0].info.SetName, a.s.SetName)}, nil
	}
	if a.s.Self.Ordinal != 0 {
		return Outcome{ActionWaitSet, fmt.Sprintf("no member of %s found yet; ordinal 0 initiates it", a.s.SetName)}, nil
	}
	if a.s.Initiate == InitiateNever {
		return Outcome{ActionWaitSet, fmt.Sprintf("no member of %s found and INITIATE=never: waiting to be added", a.s.SetName)}, nil
	}
	return a.maybeInitiate(ctx, peers)
}

// survey looks up every other ordinal and asks those that exist for hello.
// Names that do not exist are left out; they cannot hold a running member.
func (a *Agent) survey(ctx context.Context) []peer {
	out := make([]*peer, a.s.ScanOrdinals)
	var wg sync.WaitGroup
	for ord := range a.s.ScanOrdinals {
		if ord == a.s.Self.Ordinal {
			continue
		}
		wg.Go(func() {
			p := &peer{ordinal: ord, host: a.s.Self.Host(ord)}
			ok, err := a.dns.Resolves(ctx, a.s.Self.DNSName(ord))
			switch {
			case err != nil:
				p.err = fmt.Errorf("resolve %s: %w", a.s.Self.DNSName(ord), err)
			case !ok:
				return
			default:
				p.info, p.err = a.admin.Hello(ctx, p.host)
			}
			out[ord] = p
		})
	}
	wg.Wait()
	var peers []peer
	for _, p := range out {
		if p != nil {
			peers = append(peers, *p)
		}
	}
	return peers
}

// maybeInitiate applies rule 4 for ordinal 0.
func (a *Agent) maybeInitiate(ctx context.Context, peers []peer) (Outcome, error) {
	var blockers []string
	for _, p := range peers {
		switch {
		case p.err != nil:
			blockers = append(blockers, fmt.Sprintf("%s exists but did not answer (%v)", p.host, p.err))
		case !p.info.Empty:
			blockers = append(blockers, fmt.Sprintf("%s holds replica-set state without being a member (REMOVED or loading its config)", p.host))
		}
	}
	self := a.s.Self.DNSName(a.s.Self.Ordinal)
	if ok, err := a.dns.Resolves(ctx, self); err != nil || !ok {
		// replSetInitiate needs the member name to resolve to this pod.
		blockers = append(blockers, fmt.Sprintf("own name %s does not resolve yet", self))
	}
	if len(blockers) > 0 {
		a.clearSince = time.Time{}
		return Outcome{ActionWaitPeers, "not initiating: " + strings.Join(blockers, "; ")}, nil
	}

	now := a.now()
	if a.clearSince.IsZero() {
		a.clearSince = now
	}
	if left := a.s.InitiateDelay - now.Sub(a.clearSince); left > 0 {
		return Outcome{ActionSettling, fmt.Sprintf("no replica-set data on this pod or on any of %d peer(s) found in DNS; initiating %s in %s unless that changes",
			len(peers), a.s.SetName, left.Round(time.Second))}, nil
	}

	cfg := Config{Name: a.s.SetName, Version: 1, Members: []Member{{ID: 0, Host: a.s.Self.Self()}}}
	err := a.admin.Initiate(ctx, a.s.LocalAddr, cfg)
	a.clearSince = time.Time{}
	if errors.Is(err, ErrAlreadyInitialized) {
		return Outcome{ActionInitiated, "replSetInitiate: already initialized (an earlier round did it)"}, nil
	}
	if err != nil {
		return Outcome{ActionWaitLocal, "replSetInitiate failed"}, fmt.Errorf("replSetInitiate on %s: %w", a.s.LocalAddr, err)
	}
	return Outcome{ActionInitiated, fmt.Sprintf("initiated %s with member _id 0 %s", a.s.SetName, a.s.Self.Self())}, nil
}

// join applies rule 3: add this pod, alone, through the primary.
func (a *Agent) join(ctx context.Context, inSet []peer) (Outcome, error) {
	primary := ""
	for _, p := range inSet {
		if p.info.WritablePrimary {
			primary = p.host
			break
		}
	}
	if primary == "" {
		for _, p := range inSet {
			if p.info.Primary != "" {
				primary = p.info.Primary
				break
			}
		}
	}
	if primary == "" {
		return Outcome{ActionWaitPrimary, fmt.Sprintf("%s has no primary right now (election?)", a.s.SetName)}, nil
	}

	cfg, err := a.admin.GetConfig(ctx, primary)
	if err != nil {
		return Outcome{ActionWaitPrimary, "could not read the config from " + primary},
			fmt.Errorf("replSetGetConfig on %s: %w", primary, err)
	}
	if cfg.Name != a.s.SetName {
		return Outcome{ActionForeignSet, fmt.Sprintf("%s serves set %q, not %q", primary, cfg.Name, a.s.SetName)}, nil
	}
	for _, m := range cfg.Members {
		if a.s.Self.IsSelf(m.Host) {
			// mongod learns the config from its peers' heartbeats and starts
			// its initial sync by itself; a second reconfig would be refused.
			return Outcome{ActionListed, fmt.Sprintf("already in the config as _id %d %s (version %d); waiting for mongod to sync",
				m.ID, m.Host, cfg.Version)}, nil
		}
	}

	next := cfg.Clone()
	next.Version++
	m := Member{ID: nextMemberID(cfg.Members, a.s.Self.Ordinal), Host: a.s.Self.Self()}
	if votingMembers(cfg.Members) >= MaxVotingMembers {
		m.NonVoting = true
	}
	next.Members = append(next.Members, m)
	if err := a.admin.Reconfig(ctx, primary, next); err != nil {
		// NotWritablePrimary, ConfigurationInProgress,
		// CurrentConfigNotCommittedYet, a lost race: all settle by
		// themselves; the next round reads a fresh config.
		return Outcome{ActionReconfigErr, fmt.Sprintf("adding %s through %s failed", m.Host, primary)},
			fmt.Errorf("replSetReconfig on %s: %w", primary, err)
	}
	voting := "voting"
	if m.NonVoting {
		voting = fmt.Sprintf("non-voting: %d voting members already", MaxVotingMembers)
	}
	return Outcome{ActionAdded, fmt.Sprintf("added %s as _id %d (%s) through %s; config version %d",
		m.Host, m.ID, voting, primary, next.Version)}, nil
}

// nextMemberID prefers the pod's ordinal, so member _ids read like pod names,
// and falls back to one past the highest _id when it is taken.
func nextMemberID(members []Member, ordinal int) int {
	taken, highest := false, -1
	for _, m := range members {
		taken = taken || m.ID == ordinal
		highest = max(highest, m.ID)
	}
	if !taken {
		return ordinal
	}
	return highest + 1
}

func votingMembers(members []Member) int {
	n := 0
	for _, m := range members {
		if !m.NonVoting {
			n++
		}
	}
	return n
}

func stateOf(h HelloInfo) string {
	switch {
	case h.WritablePrimary:
		return "PRIMARY"
	case h.Secondary:
		return "SECONDARY"
	}
	return "neither primary nor secondary yet"
}

// Run repeats Step until ctx ends, then returns nil. Only changes are logged
// at Info or above, so a steady state costs one line.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("starting", "self", a.s.Self.Self(), "set", a.s.SetName, "initiate", string(a.s.Initiate),
		"ordinal", a.s.Self.Ordinal, "scanOrdinals", a.s.ScanOrdinals)
	last := ""
	for {
		out, err := a.Step(ctx)
		if ctx.Err() != nil {
			a.log.Info("stopping")
			return nil
		}
		key := string(out.Action) + "\x00" + out.Detail + "\x00" + fmt.Sprint(err)
		level := slog.LevelDebug
		if key != last {
			level = levelOf(out.Action, err)
		}
		last = key
		attrs := []any{"action", string(out.Action), "detail", out.Detail}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		a.log.Log(ctx, level, "round", attrs...)

		wait := a.s.Interval
		if out.Action == ActionMember || out.Action == ActionNotMember {
			wait = a.s.MemberInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			a.log.Info("stopping")
			return nil
		case <-t.C:
		}
	}
}

func levelOf(act Action, err error) slog.Level {
	switch {
	case act == ActionForeignSet:
		return slog.LevelError
	case err != nil:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
