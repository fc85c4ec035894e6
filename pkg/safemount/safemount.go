// Package safemount guards the mount(8) and umount(8) command lines that
// k8s.io/mount-utils builds. mount-utils puts the source and target after
// the options with no "--" (its extra flags go first), so a source or target
// beginning with '-' would read as an option, e.g. "-oremount:/export". The
// guard refuses such arguments before anything runs.
package safemount

import (
	"fmt"
	"strings"

	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
)

// ErrOptionLike marks a mount source or target that would read as an
// option; it is an invalid argument, never worth a retry.
var ErrOptionLike = fmt.Errorf("%w: mount argument %w", backend.ErrInvalid, params.ErrOptionLike)

// New wraps m; nil stays nil.
func New(m mount.Interface) mount.Interface {
	if m == nil {
		return nil
	}
	if _, ok := m.(guarded); ok {
		return m
	}
	return guarded{m}
}

type guarded struct{ mount.Interface }

// Check reports whether any of args would be parsed as an option.
func Check(args ...string) error {
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("%w: %q", ErrOptionLike, a)
		}
	}
	return nil
}

func (g guarded) Mount(source, target, fstype string, options []string) error {
	if err := Check(source, target, fstype); err != nil {
		return err
	}
	return g.Interface.Mount(source, target, fstype, options)
}

func (g guarded) MountSensitive(source, target, fstype string, options, sensitive []string) error {
	if err := Check(source, target, fstype); err != nil {
		return err
	}
	return g.Interface.MountSensitive(source, target, fstype, options, sensitive)
}

func (g guarded) MountSensitiveWithoutSystemd(source, target, fstype string, options, sensitive []string) error {
	if err := Check(source, target, fstype); err != nil {
		return err
	}
	return g.Interface.MountSensitiveWithoutSystemd(source, target, fstype, options, sensitive)
}

func (g guarded) MountSensitiveWithoutSystemdWithMountFlags(source, target, fstype string, options, sensitive, flags []string) error {
	if err := Check(source, target, fstype); err != nil {
		return err
	}
	return g.Interface.MountSensitiveWithoutSystemdWithMountFlags(source, target, fstype, options, sensitive, flags)
}

func (g guarded) Unmount(target string) error {
	if err := Check(target); err != nil {
		return err
	}
	return g.Interface.Unmount(target)
}
