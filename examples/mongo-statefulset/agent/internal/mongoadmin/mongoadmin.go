// Package mongoadmin implements rsagent.Admin with go.mongodb.org/mongo-driver/v2.
//
// Every call opens a direct connection to exactly one node (never replica-set
// discovery: the agent must talk to the node it names, including one that is
// not a member yet) and closes it afterwards. The agent makes a handful of
// calls every few seconds, so pooling would buy nothing.
package mongoadmin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/carve-csi/carve/examples/mongo-statefulset/agent/internal/rsagent"
)

// Server error names (CommandError.Name) the agent acts on. Names, not
// codes: they are stable and readable in logs.
const (
	codeNotYetInitialized   = "NotYetInitialized"    // 94
	codeAlreadyInitialized  = "AlreadyInitialized"   // 23
	codeNoReplicationEnable = "NoReplicationEnabled" // 76
)

// Options configure an Admin.
type Options struct {
	// Timeout bounds each call: server selection, connect and the commands.
	Timeout time.Duration
	// Username and Password, if set, authenticate with SCRAM against
	// AuthSource (default admin). Unset works without access control, and
	// on the local mongod through the localhost exception until the first
	// user exists.
	Username, Password, AuthSource string
}

// Admin is the mongo-driver implementation of rsagent.Admin.
type Admin struct{ o Options }

var _ rsagent.Admin = (*Admin)(nil)

// New returns an Admin; a zero Timeout means 5 s.
func New(o Options) *Admin {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.AuthSource == "" {
		o.AuthSource = "admin"
	}
	return &Admin{o: o}
}

// with runs f with a client directly connected to host.
func (a *Admin) with(ctx context.Context, host string, f func(context.Context, *mongo.Client) error) error {
	opts := options.Client().
		SetHosts([]string{host}).
		SetDirect(true).
		SetAppName("mongo-rs-agent").
		SetConnectTimeout(a.o.Timeout).
		SetServerSelectionTimeout(a.o.Timeout).
		SetMaxPoolSize(1)
	if a.o.Username != "" {
		opts.SetAuth(options.Credential{Username: a.o.Username, Password: a.o.Password, AuthSource: a.o.AuthSource})
	}
	c, err := mongo.Connect(opts)
	if err != nil {
		return fmt.Errorf("connect %s: %w", host, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), a.o.Timeout)
		defer cancel()
		_ = c.Disconnect(dctx) // nothing to do about a failed goodbye
	}()
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	return f(ctx, c)
}

func runCommand(ctx context.Context, c *mongo.Client, cmd bson.D) (bson.Raw, error) {
	raw, err := c.Database("admin").RunCommand(ctx, cmd).Raw()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd[0].Key, err)
	}
	return raw, nil
}

// helloReply holds the hello fields the agent reads.
type helloReply struct {
	SetName           string `bson:"setName"`
	Me                string `bson:"me"`
	Primary           string `bson:"primary"`
	IsWritablePrimary bool   `bson:"isWritablePrimary"`
	Secondary         bool   `bson:"secondary"`
}

// Hello runs hello; for a node without setName it also asks whether the node
// is truly empty (see rsagent.HelloInfo.Empty).
func (a *Admin) Hello(ctx context.Context, host string) (rsagent.HelloInfo, error) {
	var info rsagent.HelloInfo
	err := a.with(ctx, host, func(ctx context.Context, c *mongo.Client) error {
		raw, err := runCommand(ctx, c, bson.D{{Key: "hello", Value: 1}})
		if err != nil {
			return err
		}
		var r helloReply
		if err := bson.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decode hello reply: %w", err)
		}
		info = rsagent.HelloInfo{SetName: r.SetName, Me: r.Me, Primary: r.Primary,
			WritablePrimary: r.IsWritablePrimary, Secondary: r.Secondary}
		if r.SetName != "" {
			return nil
		}
		info.Empty, err = empty(ctx, c)
		return err
	})
	if err != nil {
		return rsagent.HelloInfo{}, fmt.Errorf("%s: %w", host, err)
	}
	return info, nil
}

// empty reports whether a node without setName holds no replica-set config.
// replSetGetStatus alone is not enough: during STARTUP mongod says
// NotYetInitialized even while it is about to load a stored config.
func empty(ctx context.Context, c *mongo.Client) (bool, error) {
	_, err := runCommand(ctx, c, bson.D{{Key: "replSetGetStatus", Value: 1}})
	switch name := errorName(err); {
	case err == nil:
		return false, nil // a status without setName: some transitional state
	case name == codeNotYetInitialized:
	case name == codeNoReplicationEnable:
		return false, fmt.Errorf("mongod runs without --replSet: %w", err)
	case name != "":
		return false, nil // InvalidReplicaSetConfig (REMOVED) and the like: has state
	default:
		return false, err // not a server answer: unknown
	}
	// Reads of the local database are allowed in every member state.
	err = c.Database("local").Collection("system.replset").FindOne(ctx, bson.D{}).Err()
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("read local.system.replset: %w", err)
	}
	return false, nil
}

// errorName is the server's error name, or "" for a non-server error.
func errorName(err error) string {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return ce.Name
	}
	return ""
}

// Initiate runs replSetInitiate.
func (a *Admin) Initiate(ctx context.Context, host string, cfg rsagent.Config) error {
	doc, err := configDoc(cfg)
	if err != nil {
		return err
	}
	err = a.with(ctx, host, func(ctx context.Context, c *mongo.Client) error {
		_, err := runCommand(ctx, c, bson.D{{Key: "replSetInitiate", Value: doc}})
		return err
	})
	if errorName(err) == codeAlreadyInitialized {
		return fmt.Errorf("%s: %w: %w", host, rsagent.ErrAlreadyInitialized, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	return nil
}

// GetConfig runs replSetGetConfig. newlyAdded flags are not requested, so the
// config can be sent back in a reconfig unchanged (mongod refuses them there).
func (a *Admin) GetConfig(ctx context.Context, host string) (rsagent.Config, error) {
	var cfg rsagent.Config
	err := a.with(ctx, host, func(ctx context.Context, c *mongo.Client) error {
		raw, err := runCommand(ctx, c, bson.D{{Key: "replSetGetConfig", Value: 1}})
		if err != nil {
			return err
		}
		doc, ok := raw.Lookup("config").DocumentOK()
		if !ok {
			return errors.New("replSetGetConfig reply has no config document")
		}
		cfg, err = parseConfig(doc)
		return err
	})
	if err != nil {
		return rsagent.Config{}, fmt.Errorf("%s: %w", host, err)
	}
	return cfg, nil
}

// Reconfig runs a non-forced replSetReconfig.
func (a *Admin) Reconfig(ctx context.Context, host string, cfg rsagent.Config) error {
	doc, err := configDoc(cfg)
	if err != nil {
		return err
	}
	err = a.with(ctx, host, func(ctx context.Context, c *mongo.Client) error {
		_, err := runCommand(ctx, c, bson.D{{Key: "replSetReconfig", Value: doc}})
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	return nil
}

// parseConfig reads the fields the agent needs and keeps the whole document
// (copied: the reply buffer is not ours) in Raw.
func parseConfig(doc bson.Raw) (rsagent.Config, error) {
	doc = append(bson.Raw(nil), doc...)
	cfg := rsagent.Config{Raw: doc}
	var ok bool
	if cfg.Name, ok = doc.Lookup("_id").StringValueOK(); !ok {
		return cfg, errors.New("config has no string _id")
	}
	if cfg.Version, ok = doc.Lookup("version").AsInt64OK(); !ok {
		return cfg, errors.New("config has no numeric version")
	}
	arr, ok := doc.Lookup("members").ArrayOK()
	if !ok {
		return cfg, errors.New("config has no members array")
	}
	vals, err := arr.Values()
	if err != nil {
		return cfg, fmt.Errorf("config members: %w", err)
	}
	for i, v := range vals {
		md, ok := v.DocumentOK()
		if !ok {
			return cfg, fmt.Errorf("config member %d is not a document", i)
		}
		id, ok := md.Lookup("_id").AsInt64OK()
		if !ok {
			return cfg, fmt.Errorf("config member %d has no numeric _id", i)
		}
		host, ok := md.Lookup("host").StringValueOK()
		if !ok {
			return cfg, fmt.Errorf("config member %d has no host", i)
		}
		votes, hasVotes := md.Lookup("votes").AsInt64OK()
		cfg.Members = append(cfg.Members, rsagent.Member{ID: int(id), Host: host, NonVoting: hasVotes && votes == 0})
	}
	return cfg, nil
}

// configDoc builds the document for replSetInitiate/replSetReconfig. With a
// Raw config from GetConfig it keeps every field (settings with the
// replicaSetId, protocolVersion, member priorities, tags, ...) and replaces
// only version and members; members already in Raw keep their documents.
func configDoc(cfg rsagent.Config) (bson.D, error) {
	rawMembers := map[int64]bson.Raw{}
	var doc bson.D
	if raw, ok := cfg.Raw.(bson.Raw); ok && len(raw) > 0 {
		elems, err := raw.Elements()
		if err != nil {
			return nil, fmt.Errorf("config document: %w", err)
		}
		for _, e := range elems {
			switch e.Key() {
			case "members":
				vals, err := e.Value().Array().Values()
				if err != nil {
					return nil, fmt.Errorf("config members: %w", err)
				}
				for _, v := range vals {
					if md, ok := v.DocumentOK(); ok {
						if id, ok := md.Lookup("_id").AsInt64OK(); ok {
							rawMembers[id] = md
						}
					}
				}
				doc = append(doc, bson.E{Key: "members"}) // filled below, same position
			case "version":
				doc = append(doc, bson.E{Key: "version"})
			default:
				doc = append(doc, bson.E{Key: e.Key(), Value: e.Value()})
			}
		}
	} else {
		doc = bson.D{{Key: "_id", Value: cfg.Name}, {Key: "version"}, {Key: "members"}}
	}

	members := bson.A{}
	for _, m := range cfg.Members {
		if md, ok := rawMembers[int64(m.ID)]; ok {
			members = append(members, md)
			continue
		}
		// int32, as mongosh sends them and mongod returns them.
		md := bson.D{{Key: "_id", Value: int32(m.ID)}, {Key: "host", Value: m.Host}}
		if m.NonVoting {
			// mongod requires priority 0 for a non-voting member.
			md = append(md, bson.E{Key: "votes", Value: int32(0)}, bson.E{Key: "priority", Value: int32(0)})
		}
		members = append(members, md)
	}
	for i := range doc {
		switch doc[i].Key {
		case "members":
			doc[i].Value = members
		case "version":
			if cfg.Version <= math.MaxInt32 {
				doc[i].Value = int32(cfg.Version)
			} else {
				doc[i].Value = cfg.Version
			}
		}
	}
	return doc, nil
}
