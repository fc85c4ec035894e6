package ferret

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/pkg/csidriver"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

const (
	// docCount documents of payloadSize bytes each survive the move.
	docCount    = 500
	payloadSize = 2048

	database   = "survival"
	collection = "docs"

	fuseSuperMagic = 0x65735546 // statfs f_type of every FUSE mount
)

// nodePublish selects how the node service publishes the Gluster volume.
type nodePublish string

const (
	// publishFUSE: the node has no --mount-map and mounts
	// `mount -t glusterfs HOST:/VOL/DIR TARGET` itself, as in production.
	publishFUSE nodePublish = "fuse"
	// publishBind: the node has the volume FUSE-mounted (--mount-map) and
	// bind-mounts the claim's directory from there.
	publishBind nodePublish = "bind"
)

// publishPath is publishFUSE unless CARVE_FERRET_PUBLISH=bind.
func publishPath(t *testing.T) nodePublish {
	switch v := os.Getenv("CARVE_FERRET_PUBLISH"); v {
	case "", string(publishFUSE):
		return publishFUSE
	case string(publishBind):
		return publishBind
	default:
		t.Fatalf("CARVE_FERRET_PUBLISH=%q: want fuse or bind", v)
		return ""
	}
}

// TestDataSurvival is issue #6's data-survival test with a real Mongo
// wire-protocol server: FerretDB v1.24.0 (SQLite backend, embedded) keeps
// its data in a claim the CSI driver carved on a real Gluster volume and
// published with a real FUSE mount. Documents inserted through the Go driver
// must all come back after the server stopped, the volume was unpublished
// and published again at another target path (the pod moved).
//
// It needs root, glusterd and FUSE: it skips without them, or fails under
// CARVE_REQUIRE_REAL=1 (the glusterd fixture decides).
func TestDataSurvival(t *testing.T) {
	mode := publishPath(t)
	_, ctx := ktesting.NewTestContext(t)
	begin := time.Now()
	cluster := glusterd.Start(t) // may wait for the host lock
	t.Logf("glusterd fixture ready after %s", time.Since(begin).Round(time.Millisecond))
	start := time.Now()
	host := cluster.Host()
	volName := "ferret_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	vol := cluster.CreateVolume(t, volName, 1)
	cluster.EnableQuota(t, volName)
	brick := vol.BrickDirs[0]
	// The controller carves on the volume through a FUSE mount (--mount-map).
	ctrlShare := cluster.Mount(t, volName)

	// Short temporary directory: unix socket paths are limited to 108 bytes.
	work, err := os.MkdirTemp("", "ferret-")
	if err != nil {
		t.Fatal(err)
	}
	work, err = filepath.EvalSymlinks(work)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Never RemoveAll under a live mount: that would delete volume data.
		if m := mountsUnder(t, work); len(m) > 0 {
			t.Errorf("mounts left under %s: %v; unmounting them lazily", work, m)
			for _, p := range m {
				_ = unix.Unmount(p, unix.MNT_DETACH)
			}
			return
		}
		if err := os.RemoveAll(work); err != nil {
			t.Errorf("remove %s: %v", work, err)
		}
	})

	controller := startDriver(t, ctx, csidriver.Config{
		Name:     csidriver.DefaultName,
		Endpoint: "unix://" + filepath.Join(work, "ctrl.sock"),
		Mode:     csidriver.ModeController,
		MountMap: sharemount.Map{sharemount.Key(host, volName): ctrlShare},
		Version:  "ferret",
	})
	nodeCfg := csidriver.Config{
		Name:     csidriver.DefaultName,
		NodeID:   "ferret-node",
		Endpoint: "unix://" + filepath.Join(work, "node.sock"),
		Mode:     csidriver.ModeNode,
		Version:  "ferret",
	}
	if mode == publishBind {
		// The node's own FUSE mount of the volume, as a DaemonSet would get
		// it by hostPath.
		nodeCfg.MountMap = sharemount.Map{sharemount.Key(host, volName): cluster.Mount(t, volName)}
	}
	node := startDriver(t, ctx, nodeCfg)
	cc := csi.NewControllerClient(controller)
	nc := csi.NewNodeClient(node)

	// CreateVolume as csi-provisioner sends it for a claim.
	pvName := "pvc-" + uuid.NewString()
	capability := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	created, err := cc.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               pvName,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{capability},
		Parameters: map[string]string{
			"backend":     "gluster",
			"servers":     host,
			"volume":      volName,
			"pathPattern": "ferret/${pv.metadata.name}",
			"quota":       "gluster",
			"onDelete":    "delete",
		},
	})
	if err != nil {
		t.Fatalf("CreateVolume %s on Gluster volume %s: %v", pvName, volName, err)
	}
	volumeID := created.GetVolume().GetVolumeId()
	id, err := volid.Parse(volumeID)
	if err != nil {
		t.Fatalf("CreateVolume returned an unparsable volume ID %q: %v", volumeID, err)
	}
	if want := "ferret/" + pvName; id.Backend != "gluster" || id.Share != volName || id.DirPath() != want {
		t.Fatalf("volume ID %q: backend %q, share %q, dir %q; want gluster, %s, %s",
			volumeID, id.Backend, id.Share, id.DirPath(), volName, want)
	}
	claimDir := id.DirPath()
	deleted := false
	t.Cleanup(func() {
		if deleted {
			return
		}
		if _, err := cc.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: volumeID}); err != nil {
			t.Errorf("cleanup: DeleteVolume %s: %v", volumeID, err)
		}
	})
	t.Logf("created %s (%s) in %s", pvName, volumeID, time.Since(start).Round(time.Millisecond))
	if fi, err := os.Stat(filepath.Join(brick, claimDir)); err != nil || !fi.IsDir() {
		t.Fatalf("claim directory %s is not on the brick %s: %v", claimDir, brick, err)
	}
	if out := cluster.MustGluster(t, "volume", "quota", volName, "list", "/"+claimDir); !strings.Contains(out, "/"+claimDir) {
		t.Errorf("no quota limit on /%s after CreateVolume with quota gluster:\n%s", claimDir, out)
	}

	targetA := filepath.Join(work, "pods", "a", "volumes", pvName, "mount")
	targetB := filepath.Join(work, "pods", "b", "volumes", pvName, "mount")
	publish := func(target string) {
		t.Helper()
		if _, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId:         volumeID,
			TargetPath:       target,
			VolumeCapability: capability,
		}); err != nil {
			t.Fatalf("NodePublishVolume %s at %s (%s publish): %v", volumeID, target, mode, err)
		}
		checkPublished(t, mode, target, host, volName, claimDir)
	}
	unpublish := func(target string) {
		t.Helper()
		if _, err := nc.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
			VolumeId: volumeID, TargetPath: target,
		}); err != nil {
			t.Fatalf("NodeUnpublishVolume %s at %s: %v", volumeID, target, err)
		}
		if m, ok := findMount(t, target); ok {
			t.Fatalf("%s is still mounted after NodeUnpublishVolume: %+v", target, m)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("target %s still exists after NodeUnpublishVolume (err %v)", target, err)
		}
	}

	// Pod A: publish, write, stop.
	publish(targetA)
	t.Cleanup(func() { unpublishQuietly(t, nc, volumeID, targetA) })
	docs := makeDocs(docCount)
	func() {
		srv := startFerret(t, filepath.Join(targetA, "db"))
		defer srv.stop(t)
		client := connect(t, srv.uri)
		defer disconnect(t, client)
		coll := client.Database(database).Collection(collection)
		res, err := coll.InsertMany(ctx, docs)
		if err != nil {
			t.Fatalf("insert %d documents: %v", len(docs), err)
		}
		if len(res.InsertedIDs) != len(docs) {
			t.Fatalf("inserted %d documents, want %d", len(res.InsertedIDs), len(docs))
		}
		if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
			Keys:    bson.D{{Key: "key", Value: 1}},
			Options: options.Index().SetName("key_1").SetUnique(true),
		}); err != nil {
			t.Fatalf("create index key_1: %v", err)
		}
		readBack(t, ctx, coll, docs) // sanity: the server itself sees them
	}()
	t.Logf("pod A: %d documents written through FerretDB at %s", docCount, targetA)

	// The data is on Gluster: the SQLite files are in the claim's directory
	// on the brick, not on the node's disk under the target path.
	sqliteFile := filepath.Join("db", database+".sqlite")
	for _, root := range []string{filepath.Join(brick, claimDir), filepath.Join(ctrlShare, claimDir)} {
		fi, err := os.Stat(filepath.Join(root, sqliteFile))
		if err != nil {
			t.Fatalf("FerretDB's SQLite file is not in the Gluster volume: %v", err)
		}
		if fi.Size() < docCount*payloadSize {
			t.Errorf("%s is %d bytes, want at least %d (the payloads)", filepath.Join(root, sqliteFile), fi.Size(), docCount*payloadSize)
		}
	}
	logDir(t, filepath.Join(brick, claimDir, "db"))

	// The pod moves: unpublish A, publish B.
	unpublish(targetA)
	publish(targetB)
	t.Cleanup(func() { unpublishQuietly(t, nc, volumeID, targetB) })

	// Pod B: every document and the index are back.
	func() {
		srv := startFerret(t, filepath.Join(targetB, "db"))
		defer srv.stop(t)
		client := connect(t, srv.uri)
		defer disconnect(t, client)
		coll := client.Database(database).Collection(collection)
		readBack(t, ctx, coll, docs)
		checkIndex(t, ctx, coll, "key_1")
	}()
	t.Logf("pod B: all %d documents read back through FerretDB at %s", docCount, targetB)

	// Cleanup through the driver: unpublish B, delete the claim.
	unpublish(targetB)
	if _, err := cc.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: volumeID}); err != nil {
		t.Fatalf("DeleteVolume %s: %v", volumeID, err)
	}
	deleted = true
	// onDelete delete: the directory leaves the claim's path at once and its
	// content is purged from the trash in the background; both must happen.
	waitGone(t, filepath.Join(brick, claimDir), time.Minute)
	waitNoTrash(t, filepath.Join(brick, ".carve-trash"), pvName, time.Minute)
	t.Logf("survival test (%s publish) done in %s", mode, time.Since(start).Round(time.Millisecond))
}

// startDriver serves cfg in-process with the real mounter and returns a
// client connection; cleanup stops it.
func startDriver(t *testing.T, ctx context.Context, cfg csidriver.Config) *grpc.ClientConn {
	t.Helper()
	d, err := csidriver.New(cfg, mount.New(""))
	if err != nil {
		t.Fatalf("csidriver.New (%s): %v", cfg.Mode, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("csidriver %s: Serve: %v", cfg.Mode, err)
		}
	})
	sock := strings.TrimPrefix(cfg.Endpoint, "unix://")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("csidriver %s did not listen on %s: %v", cfg.Mode, sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial csidriver %s: %v", cfg.Mode, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func unpublishQuietly(t *testing.T, nc csi.NodeClient, volumeID, target string) {
	if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
		return
	}
	if _, err := nc.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{
		VolumeId: volumeID, TargetPath: target,
	}); err != nil {
		t.Errorf("cleanup: NodeUnpublishVolume %s: %v", target, err)
	}
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Root, MountPoint, FSType, Source string
}

func readMountinfo(t *testing.T) []mountEntry {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, mountEntry{
			Root: unescape(fields[3]), MountPoint: unescape(fields[4]),
			FSType: fields[sep+1], Source: unescape(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	return out
}

// unescape decodes mountinfo's octal escapes (\040 for a space...).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(n)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the topmost mount at path.
func findMount(t *testing.T, path string) (mountEntry, bool) {
	t.Helper()
	var found mountEntry
	ok := false
	for _, m := range readMountinfo(t) {
		if m.MountPoint == path {
			found, ok = m, true // later lines are mounted on top
		}
	}
	return found, ok
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, m := range readMountinfo(t) {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			out = append(out, m.MountPoint)
		}
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

// checkPublished verifies that target is a Gluster FUSE mount of the
// claim's directory: mounted directly (source HOST:/VOL/DIR), or bound from
// a FUSE mount of the volume (root /DIR).
func checkPublished(t *testing.T, mode nodePublish, target, host, vol, dir string) {
	t.Helper()
	m, ok := findMount(t, target)
	if !ok {
		t.Fatalf("NodePublishVolume succeeded but %s is not a mount point", target)
	}
	if m.FSType != "fuse.glusterfs" {
		t.Fatalf("%s is a %s mount of %s, want fuse.glusterfs", target, m.FSType, m.Source)
	}
	switch mode {
	case publishFUSE:
		// mount.glusterfs records the source it was given.
		if want := host + ":/" + vol + "/" + dir; m.Source != want {
			t.Fatalf("%s: direct FUSE mount of %q, want %q (root %s)", target, m.Source, want, m.Root)
		}
	case publishBind:
		if want := "/" + dir; m.Root != want {
			t.Fatalf("%s: bind mount of %q on %s, want root %q", target, m.Root, m.Source, want)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatalf("statfs %s: %v", target, err)
	}
	if uint32(st.Type) != fuseSuperMagic {
		t.Fatalf("statfs %s: f_type %#x, want FUSE %#x", target, st.Type, fuseSuperMagic)
	}
	t.Logf("published at %s: %s mount of %s (root %s, %s)", target, m.FSType, m.Source, m.Root, mode)
}

func waitGone(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists %s after DeleteVolume with onDelete delete (err %v)", path, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNoTrash waits until no entry of trash names the claim.
func waitNoTrash(t *testing.T, trash, claim string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		entries, err := os.ReadDir(trash)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("list %s: %v", trash, err)
		}
		var left []string
		for _, e := range entries {
			if strings.Contains(e.Name(), claim) {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted claim not purged within %s: %s holds %v", timeout, trash, left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func logDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			names = append(names, fmt.Sprintf("%s (%d bytes)", e.Name(), fi.Size()))
		}
	}
	t.Logf("on the brick, %s: %s", dir, strings.Join(names, ", "))
}

// ferret is an embedded FerretDB server.
type ferret struct {
	uri    string
	cancel context.CancelFunc
	done   chan error
}

// startFerret runs FerretDB with the SQLite backend in dataDir on a random
// local port.
func startFerret(t *testing.T, dataDir string) *ferret {
	t.Helper()
	// The application creates its data directory in the volume, as
	// mongod's image does for /data/db.
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		t.Fatalf("create FerretDB data directory: %v", err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		// Warnings and errors only: each Disconnect adds one warning, FerretDB
		// answering endSessions with CommandNotFound.
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Handler:   "sqlite",
		SQLiteURL: "file:" + dataDir + "/",
	})
	if err != nil {
		t.Fatalf("FerretDB on %s: %v", dataDir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &ferret{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- f.Run(ctx) }()
	s.uri = f.MongoDBURI() // waits for the listener
	t.Logf("FerretDB %s serving %s", s.uri, dataDir)
	return s
}

// stop cancels the server and waits until Run returned, which closes the
// SQLite databases.
func (s *ferret) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("FerretDB Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("FerretDB did not stop within 30s")
	}
}

// testWriter sends FerretDB's log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", uri, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Ping(ctx, nil); err != nil {
		t.Fatalf("ping %s: %v", uri, err)
	}
	return client
}

func disconnect(t *testing.T, c *mongo.Client) {
	t.Helper()
	// FerretDB does not implement endSessions, which Disconnect sends; it
	// logs that and the driver ignores the answer.
	if err := c.Disconnect(context.Background()); err != nil {
		t.Errorf("disconnect: %v", err)
	}
}

// doc is one test document: a distinct _id and key, and a payload that
// differs per document.
type doc struct {
	ID      int32  `bson:"_id"`
	Key     string `bson:"key"`
	Payload []byte `bson:"payload"`
	Sum     string `bson:"sum"`
}

func makeDocs(n int) []any {
	docs := make([]any, n)
	for i := range n {
		seed := sha256.Sum256([]byte(fmt.Sprintf("carve-ferret-%d", i)))
		payload := bytes.Repeat(seed[:], payloadSize/len(seed))
		docs[i] = doc{
			ID:      int32(i),
			Key:     fmt.Sprintf("k%05d", i),
			Payload: payload,
			Sum:     fmt.Sprintf("%x", sha256.Sum256(payload)),
		}
	}
	return docs
}

// readBack checks that the collection holds exactly want, document by
// document.
func readBack(t *testing.T, ctx context.Context, coll *mongo.Collection, want []any) {
	t.Helper()
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatalf("count documents: %v", err)
	}
	if n != int64(len(want)) {
		t.Fatalf("collection holds %d documents, want %d", n, len(want))
	}
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatalf("find: %v", err)
	}
	var got []doc
	if err := cur.All(ctx, &got); err != nil {
		t.Fatalf("read documents: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d documents, want %d", len(got), len(want))
	}
	bad := 0
	for i, g := range got {
		w := want[i].(doc)
		if g.ID != w.ID || g.Key != w.Key || g.Sum != w.Sum || !bytes.Equal(g.Payload, w.Payload) {
			if bad++; bad <= 5 {
				t.Errorf("document %d: got _id %d key %q sum %s (%d payload bytes), want _id %d key %q sum %s",
					i, g.ID, g.Key, g.Sum, len(g.Payload), w.ID, w.Key, w.Sum)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d documents differ", bad, len(want))
	}
	// A lookup through the key index, too.
	var one doc
	if err := coll.FindOne(ctx, bson.D{{Key: "key", Value: "k00042"}}).Decode(&one); err != nil {
		t.Fatalf("find key k00042: %v", err)
	}
	if one.ID != 42 {
		t.Fatalf("key k00042 has _id %d, want 42", one.ID)
	}
}

func checkIndex(t *testing.T, ctx context.Context, coll *mongo.Collection, name string) {
	t.Helper()
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatalf("list indexes: %v", err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
		if s.Name == name {
			return
		}
	}
	t.Fatalf("index %s did not survive: indexes %v", name, names)
}
