package mongoadmin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/carve-csi/carve/examples/mongo-statefulset/agent/internal/rsagent"
)

// A config as mongod 8.0 returns it from replSetGetConfig.
func serverConfig(t *testing.T) bson.Raw {
	t.Helper()
	setID := bson.NewObjectID()
	raw, err := bson.Marshal(bson.D{
		{Key: "_id", Value: "rs0"},
		{Key: "version", Value: int32(3)},
		{Key: "term", Value: int32(2)},
		{Key: "members", Value: bson.A{
			bson.D{{Key: "_id", Value: int32(0)}, {Key: "host", Value: "mongo-0.mongo.default.svc.cluster.local:27017"},
				{Key: "arbiterOnly", Value: false}, {Key: "buildIndexes", Value: true}, {Key: "hidden", Value: false},
				{Key: "priority", Value: 2.0}, {Key: "tags", Value: bson.D{{Key: "zone", Value: "a"}}},
				{Key: "secondaryDelaySecs", Value: int64(0)}, {Key: "votes", Value: int32(1)}},
			bson.D{{Key: "_id", Value: int32(1)}, {Key: "host", Value: "mongo-1.mongo.default.svc.cluster.local:27017"},
				{Key: "priority", Value: 0.0}, {Key: "votes", Value: int32(0)}},
		}},
		{Key: "protocolVersion", Value: int64(1)},
		{Key: "writeConcernMajorityJournalDefault", Value: true},
		{Key: "settings", Value: bson.D{
			{Key: "chainingAllowed", Value: true},
			{Key: "electionTimeoutMillis", Value: int32(10000)},
			{Key: "replicaSetId", Value: setID},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestParseConfig(t *testing.T) {
	cfg, err := parseConfig(serverConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "rs0" || cfg.Version != 3 || len(cfg.Members) != 2 {
		t.Fatalf("got %+v", cfg)
	}
	want := []rsagent.Member{
		{ID: 0, Host: "mongo-0.mongo.default.svc.cluster.local:27017"},
		{ID: 1, Host: "mongo-1.mongo.default.svc.cluster.local:27017", NonVoting: true},
	}
	for i := range want {
		if cfg.Members[i] != want[i] {
			t.Errorf("member %d = %+v, want %+v", i, cfg.Members[i], want[i])
		}
	}
	for _, bad := range []bson.D{
		{{Key: "version", Value: 1}, {Key: "members", Value: bson.A{}}},
		{{Key: "_id", Value: "rs0"}, {Key: "members", Value: bson.A{}}},
		{{Key: "_id", Value: "rs0"}, {Key: "version", Value: 1}},
		{{Key: "_id", Value: "rs0"}, {Key: "version", Value: 1}, {Key: "members", Value: bson.A{bson.D{{Key: "host", Value: "x:1"}}}}},
	} {
		raw, _ := bson.Marshal(bad)
		if _, err := parseConfig(raw); err == nil {
			t.Errorf("parseConfig(%v) accepted", bad)
		}
	}
}

// A reconfig must send back everything it read: dropping settings.replicaSetId
// or a member's priority and tags would change the set behind the operator's
// back. Only version and the appended member differ.
func TestConfigDocKeepsEverythingButVersionAndNewMember(t *testing.T) {
	orig := serverConfig(t)
	cfg, err := parseConfig(orig)
	if err != nil {
		t.Fatal(err)
	}
	next := cfg.Clone()
	next.Version++
	next.Members = append(next.Members,
		rsagent.Member{ID: 2, Host: "mongo-2.mongo.default.svc.cluster.local:27017"},
		rsagent.Member{ID: 8, Host: "mongo-8.mongo.default.svc.cluster.local:27017", NonVoting: true})
	doc, err := configDoc(next)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bson.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}

	origElems, _ := orig.Elements()
	gotElems, _ := bson.Raw(got).Elements()
	if len(origElems) != len(gotElems) {
		t.Fatalf("%d top-level fields, want %d:\n%s", len(gotElems), len(origElems), bson.Raw(got))
	}
	for i, oe := range origElems {
		ge := gotElems[i]
		if oe.Key() != ge.Key() {
			t.Errorf("field %d is %q, want %q (order kept)", i, ge.Key(), oe.Key())
		}
		switch oe.Key() {
		case "version":
			if v := ge.Value(); v.Type != bson.TypeInt32 || v.Int32() != 4 {
				t.Errorf("version = %v, want int32 4", v)
			}
		case "members":
			ms, _ := ge.Value().Array().Values()
			om, _ := oe.Value().Array().Values()
			if len(ms) != 4 {
				t.Fatalf("%d members, want 4", len(ms))
			}
			for j := range om {
				if !ms[j].Equal(om[j]) {
					t.Errorf("member %d changed:\n got %s\nwant %s", j, ms[j], om[j])
				}
			}
			want2, _ := bson.Marshal(bson.D{{Key: "_id", Value: int32(2)}, {Key: "host", Value: "mongo-2.mongo.default.svc.cluster.local:27017"}})
			if !bytes.Equal(want2, ms[2].Document()) {
				t.Errorf("new member = %s, want %s", ms[2], bson.Raw(want2))
			}
			if v := ms[3].Document().Lookup("votes"); v.Int32() != 0 || ms[3].Document().Lookup("priority").Int32() != 0 {
				t.Errorf("non-voting member = %s, want votes 0 priority 0", ms[3])
			}
		default:
			if !oe.Value().Equal(ge.Value()) {
				t.Errorf("%s changed: got %s, want %s", oe.Key(), ge.Value(), oe.Value())
			}
		}
	}
}

func TestConfigDocForInitiate(t *testing.T) {
	doc, err := configDoc(rsagent.Config{Name: "rs0", Version: 1,
		Members: []rsagent.Member{{ID: 0, Host: "mongo-0.mongo.default.svc.cluster.local:27017"}}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := bson.Marshal(doc)
	want, _ := bson.Marshal(bson.D{
		{Key: "_id", Value: "rs0"}, {Key: "version", Value: int32(1)},
		{Key: "members", Value: bson.A{bson.D{{Key: "_id", Value: int32(0)}, {Key: "host", Value: "mongo-0.mongo.default.svc.cluster.local:27017"}}}},
	})
	if !bytes.Equal(got, want) {
		t.Errorf("got %s\nwant %s", bson.Raw(got), bson.Raw(want))
	}
}

func TestErrorName(t *testing.T) {
	err := fmt.Errorf("replSetGetStatus: %w", mongo.CommandError{Code: 94, Name: "NotYetInitialized"})
	if got := errorName(err); got != codeNotYetInitialized {
		t.Errorf("errorName = %q", got)
	}
	if got := errorName(errors.New("connection refused")); got != "" {
		t.Errorf("errorName(non-server error) = %q, want empty", got)
	}
}

// The real driver path without a server: a node that does not listen is an
// error, bounded by the timeout, not a hang and not an "empty" node.
func TestHelloUnreachable(t *testing.T) {
	a := New(Options{Timeout: 300 * time.Millisecond})
	start := time.Now()
	info, err := a.Hello(context.Background(), "127.0.0.1:1")
	if err == nil {
		t.Fatalf("Hello to a closed port = %+v, want an error", info)
	}
	if info.Empty {
		t.Error("an unreachable node reported empty")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s, want about the 300ms timeout", d)
	}
	if _, err := a.GetConfig(context.Background(), "127.0.0.1:1"); err == nil {
		t.Error("GetConfig to a closed port succeeded")
	}
}
