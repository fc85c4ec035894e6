// Command mkimage assembles an OCI image offline, without Docker or a
// registry, and writes it as a docker-archive tarball that
// `ctr images import`, `docker load` and `crane push` accept.
//
// Layers, in order: an optional root filesystem tar (e.g. from mmdebstrap),
// then one layer with the files given by -file and -busybox. Every timestamp
// is clamped to SOURCE_DATE_EPOCH (or -epoch) and the config's creation time
// is that epoch, so the same inputs give the same image digest.
//
//	mkimage -ref ghcr.io/carve-csi/carve-csi-node:v0.1.0 -out node.tar \
//	  -rootfs base.tar -file bin/csi-driver:/csi-driver -entrypoint /csi-driver
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var files, envs, entrypoint, cmd list
	ref := flag.String("ref", "", "image reference (name:tag) recorded in the archive")
	out := flag.String("out", "", "docker-archive tarball to write")
	rootfs := flag.String("rootfs", "", "optional root filesystem tar for the first layer")
	busybox := flag.String("busybox", "", "optional static busybox binary: installed as /bin/busybox with its applets as symlinks")
	user := flag.String("user", "", "config User (uid:gid)")
	workdir := flag.String("workdir", "", "config WorkingDir")
	epochFlag := flag.Int64("epoch", -1, "timestamp for every file and the config (default $SOURCE_DATE_EPOCH, else 0)")
	flag.Var(&files, "file", "SRC:DST[:MODE] file to add (repeatable; MODE octal, default the source's)")
	flag.Var(&envs, "env", "KEY=VALUE for the config (repeatable; PATH has a default)")
	flag.Var(&entrypoint, "entrypoint", "entrypoint word (repeatable)")
	flag.Var(&cmd, "cmd", "cmd word (repeatable)")
	flag.Parse()
	if *ref == "" || *out == "" {
		fail(fmt.Errorf("-ref and -out are required"))
	}
	epoch := *epochFlag
	if epoch < 0 {
		epoch = 0
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				fail(fmt.Errorf("SOURCE_DATE_EPOCH: %v", err))
			}
			epoch = v
		}
	}
	when := time.Unix(epoch, 0).UTC()

	tag, err := name.NewTag(*ref)
	if err != nil {
		fail(err)
	}
	img := empty.Image
	var layers []v1.Layer
	if *rootfs != "" {
		l, err := normalizedLayer(*rootfs, when)
		if err != nil {
			fail(fmt.Errorf("rootfs layer: %w", err))
		}
		layers = append(layers, l)
	}
	if len(files) > 0 || *busybox != "" {
		l, err := filesLayer(files, *busybox, when)
		if err != nil {
			fail(fmt.Errorf("files layer: %w", err))
		}
		layers = append(layers, l)
	}
	for _, l := range layers {
		img, err = mutate.AppendLayers(img, l)
		if err != nil {
			fail(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		fail(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: when}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range envs {
		if strings.HasPrefix(e, "PATH=") {
			cf.Config.Env[0] = e
			continue
		}
		cf.Config.Env = append(cf.Config.Env, e)
	}
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = cmd
	cf.Config.User = *user
	cf.Config.WorkingDir = *workdir
	cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "https://github.com/carve-csi/carve"}
	// History entries keep tools that count them (docker history) happy.
	cf.History = nil
	for range layers {
		cf.History = append(cf.History, v1.History{Created: v1.Time{Time: when}, CreatedBy: "carve hack/tools/images/mkimage"})
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		fail(err)
	}
	img = mutate.MediaType(img, "application/vnd.docker.distribution.manifest.v2+json")

	tmp := *out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		fail(err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		fail(err)
	}
	digest, err := img.Digest()
	if err != nil {
		fail(err)
	}
	st, err := os.Stat(*out)
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s %s %d\n", tag.String(), digest.String(), st.Size())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mkimage:", err)
	os.Exit(1)
}

// layerFromBuffer makes a gzip layer from an uncompressed tar in memory;
// compression is deterministic for the same bytes and level.
func layerFromBuffer(b []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
}

// normalizedLayer copies a root filesystem tar, clamping every timestamp to
// when and dropping access/change times, in the tar's own order.
func normalizedLayer(src string, when time.Time) (v1.Layer, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue // the root itself
		}
		h.Name = name
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.ModTime.After(when) {
			h.ModTime = when
		}
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		records := map[string]string{}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				records[k] = v
			}
		}
		h.PAXRecords = records
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return layerFromBuffer(buf.Bytes())
}

// filesLayer builds the application layer: the given files, their parent
// directories, and busybox with applet symlinks.
func filesLayer(files []string, busybox string, when time.Time) (v1.Layer, error) {
	type entry struct {
		dst  string
		src  string
		mode int64
		link string
	}
	var entries []entry
	for _, spec := range files {
		parts := strings.Split(spec, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("-file %q: want SRC:DST[:MODE]", spec)
		}
		st, err := os.Stat(parts[0])
		if err != nil {
			return nil, err
		}
		mode := int64(st.Mode().Perm())
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 64)
			if err != nil {
				return nil, fmt.Errorf("-file %q: mode: %v", spec, err)
			}
			mode = m
		}
		entries = append(entries, entry{dst: strings.TrimPrefix(path.Clean("/"+parts[1]), "/"), src: parts[0], mode: mode})
	}
	if busybox != "" {
		entries = append(entries, entry{dst: "bin/busybox", src: busybox, mode: 0o755})
		out, err := exec.Command(busybox, "--list-full").Output()
		if err != nil {
			return nil, fmt.Errorf("busybox --list-full: %w", err)
		}
		for _, applet := range strings.Fields(string(out)) {
			if applet == "bin/busybox" {
				continue
			}
			entries = append(entries, entry{dst: applet, link: "/bin/busybox"})
		}
		// Places containers expect to exist.
		entries = append(entries, entry{dst: "tmp", mode: 0o1777 | int64(0o40000)})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].dst < entries[j].dst })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	mkdirs := func(p string) error {
		var parents []string
		for d := path.Dir(p); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: when, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, e := range entries {
		if err := mkdirs(e.dst); err != nil {
			return nil, err
		}
		switch {
		case e.link != "":
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: e.dst, Linkname: e.link, Mode: 0o777, ModTime: when, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		case e.src == "":
			dirs[e.dst] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: e.dst + "/", Mode: e.mode &^ 0o40000, ModTime: when, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		default:
			data, err := os.ReadFile(e.src)
			if err != nil {
				return nil, err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.dst, Mode: e.mode, Size: int64(len(data)), ModTime: when, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return layerFromBuffer(buf.Bytes())
}
