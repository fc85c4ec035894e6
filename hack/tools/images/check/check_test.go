// Package check tests the images that hack/build-images.sh (`make images`)
// wrote: each archive is a valid image, its program runs inside its own root
// filesystem and reports its version, and the carve images carry the tools
// carve runs (mount helpers on the node, gluster and ssh on the controller).
//
//	CARVE_IMAGES_DIR=bin/images go test ./check   (from hack/tools/images, as root)
//
// The programs run chrooted into the unpacked image, which needs root; without
// root or without images the test skips, unless CARVE_REQUIRE_REAL=1.
package check

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

type entry struct {
	file, ref, digest, kind string
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func imagesDir(t *testing.T) string {
	if d := os.Getenv("CARVE_IMAGES_DIR"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../../../bin/images")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readList(t *testing.T, dir string) []entry {
	f, err := os.Open(filepath.Join(dir, "images.txt"))
	if err != nil {
		skipOrFail(t, "no images (run make images first): %v", err)
	}
	defer f.Close()
	var list []entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 5 {
			t.Fatalf("images.txt: bad line %q", sc.Text())
		}
		list = append(list, entry{file: fields[0], ref: fields[1], digest: fields[2], kind: fields[4]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return list
}

func TestImages(t *testing.T) {
	dir := imagesDir(t)
	list := readList(t, dir)
	if os.Geteuid() != 0 {
		skipOrFail(t, "running programs inside the images needs root (chroot)")
	}
	want := []string{"carve-provisioner", "carve-csi-controller", "carve-csi-node", "mongo-rs-agent",
		"ferretdb", "carve-registrar", "carve-livenessprobe", "carve-resizer", "csi-provisioner", "test-pause"}
	have := map[string]bool{}
	for _, e := range list {
		have[e.file] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("images.txt lacks %s", w)
		}
	}
	for _, e := range list {
		t.Run(e.file, func(t *testing.T) { checkImage(t, dir, e) })
	}
}

func checkImage(t *testing.T, dir string, e entry) {
	tag, err := name.NewTag(e.ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(dir, e.file+".tar"), &tag)
	if err != nil {
		t.Fatalf("open archive: %v", err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("invalid image: %v", err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if digest.String() != e.digest {
		t.Errorf("digest %s, images.txt says %s", digest, e.digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	rootfs := t.TempDir()
	if err := unpack(img, rootfs); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	entry := cf.Config.Entrypoint
	if len(entry) == 0 && e.kind != "busybox" {
		t.Fatalf("no entrypoint")
	}
	tagVersion := tag.TagStr()

	// run the entrypoint with --version; the carve images and sidecars print
	// the tag they were built as.
	switch e.kind {
	case "carve", "controller", "node", "agent", "sidecar", "pause":
		out := run(t, rootfs, cf, append(entry, "--version")...)
		if e.kind != "pause" && !strings.Contains(out, tagVersion) {
			t.Errorf("%v --version printed %q, want it to contain %s", entry, out, tagVersion)
		}
	case "ferretdb":
		out := run(t, rootfs, cf, append(entry, "--version")...)
		if !strings.Contains(strings.ToLower(out), "version") {
			t.Errorf("ferretdb --version printed %q", out)
		}
	case "busybox":
		if out := run(t, rootfs, cf, "sh", "-c", "echo hello from busybox"); !strings.Contains(out, "hello from busybox") {
			t.Errorf("sh printed %q", out)
		}
	}
	switch e.kind {
	case "node":
		for _, p := range []string{"mount.nfs", "mount.nfs4", "mount.glusterfs", "mount", "umount", "glusterfs"} {
			requireTool(t, rootfs, p)
		}
		if out := run(t, rootfs, cf, "mount.nfs", "-V"); !strings.Contains(out, "nfs-utils") {
			t.Errorf("mount.nfs -V printed %q", out)
		}
		if out := run(t, rootfs, cf, "glusterfs", "--version"); !strings.Contains(out, "glusterfs") {
			t.Errorf("glusterfs --version printed %q", out)
		}
		run(t, rootfs, cf, "mount", "--version")
	case "controller":
		for _, p := range []string{"gluster", "ssh"} {
			requireTool(t, rootfs, p)
		}
		if out := run(t, rootfs, cf, "gluster", "--version"); !strings.Contains(out, "glusterfs") {
			t.Errorf("gluster --version printed %q", out)
		}
		if out := run(t, rootfs, cf, "ssh", "-V"); !strings.Contains(out, "OpenSSH") {
			t.Errorf("ssh -V printed %q", out)
		}
	}
}

// requireTool finds an executable on the image's PATH.
func requireTool(t *testing.T, rootfs, prog string) {
	t.Helper()
	for _, d := range []string{"usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"} {
		p := filepath.Join(rootfs, d, prog)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return
		}
	}
	t.Errorf("image has no %s on its PATH", prog)
}

// run executes argv chrooted into rootfs with the image's environment and
// user, and returns its combined output; a non-zero exit fails the test.
func run(t *testing.T, rootfs string, cf *v1.ConfigFile, argv ...string) string {
	t.Helper()
	prog := argv[0]
	if !strings.HasPrefix(prog, "/") {
		for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			if _, err := os.Lstat(filepath.Join(rootfs, d, prog)); err == nil {
				prog = d + "/" + prog
				break
			}
		}
	}
	args := argv[1:]
	if _, err := os.Stat(filepath.Join(rootfs, "bin/mount")); err == nil && prog != "/bin/busybox" && !strings.HasSuffix(prog, "/sh") {
		// Debian-based images: some programs (gluster) need /proc. The
		// child has its own mount and PID namespaces (Go makes / rprivate
		// in it), so the proc mount never reaches the host.
		args = append([]string{"-c", `mount -t proc proc /proc && exec "$@"`, "sh", prog}, args...)
		prog = "/bin/sh"
	}
	cmd := exec.Command(prog, args...)
	cmd.Env = cf.Config.Env
	cmd.Dir = "/"
	// exec.Command resolves prog on the host; Path must be the in-chroot path.
	cmd.Path = prog
	attr := &syscall.SysProcAttr{Chroot: rootfs, Unshareflags: syscall.CLONE_NEWNS, Cloneflags: syscall.CLONE_NEWPID}
	if u := cf.Config.User; u != "" {
		var uid, gid uint32
		if _, err := fmt.Sscanf(u, "%d:%d", &uid, &gid); err == nil {
			attr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
		}
	}
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	t.Logf("%v: %s", argv, strings.TrimSpace(string(out)))
	if err != nil {
		t.Errorf("%v inside the image: %v", argv, err)
	}
	return string(out)
}

// unpack writes the image's flattened filesystem into dir (regular files,
// directories, symlinks, hard links, device nodes).
func unpack(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|dirBits(h.Mode)); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|dirBits(h.Mode)); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			_ = os.Remove(p)
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock:
			mode := uint32(h.Mode) & 0o7777
			if h.Typeflag == tar.TypeChar {
				mode |= syscall.S_IFCHR
			} else {
				mode |= syscall.S_IFBLK
			}
			_ = os.Remove(p)
			dev := int((h.Devmajor&0xfff)<<8 | (h.Devminor & 0xff) | (h.Devminor&^0xff)<<12)
			if err := syscall.Mknod(p, mode, dev); err != nil {
				return err
			}
		case tar.TypeLink:
			_ = os.Remove(p)
			if err := os.Link(filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p); err != nil {
				return err
			}
		}
	}
}

// dirBits keeps setuid, setgid and sticky bits from a tar mode.
func dirBits(mode int64) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}
