package csidriver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

func TestErrorMapping(t *testing.T) {
	_, malformed := volid.Parse("fake-vol-id")
	wrap := func(err error) error { return fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", err)) }
	for _, tc := range []struct {
		name     string
		err      error
		lookup   codes.Code // RPCs that look a volume up by ID
		noLookup codes.Code // RPCs where the ID is only an argument
	}{
		{"deadline", wrap(context.DeadlineExceeded), codes.DeadlineExceeded, codes.DeadlineExceeded},
		{"canceled", wrap(context.Canceled), codes.Canceled, codes.Canceled},
		{"incompatible", wrap(errIncompatible), codes.AlreadyExists, codes.AlreadyExists},
		{"lock busy", wrap(errBusy), codes.Aborted, codes.Aborted},
		{"backend busy", wrap(backend.ErrBusy), codes.Aborted, codes.Aborted},
		{"malformed ID", malformed, codes.NotFound, codes.InvalidArgument},
		{"invalid", wrap(backend.ErrInvalid), codes.InvalidArgument, codes.InvalidArgument},
		{"invalid parameter", wrap(params.ErrInvalid), codes.InvalidArgument, codes.InvalidArgument},
		{"not found", wrap(backend.ErrNotFound), codes.NotFound, codes.NotFound},
		{"directory not found", wrap(dirvol.ErrNotFound), codes.NotFound, codes.NotFound},
		{"conflict", wrap(backend.ErrConflict), codes.FailedPrecondition, codes.FailedPrecondition},
		{"unsafe path", wrap(dirvol.ErrUnsafe), codes.FailedPrecondition, codes.FailedPrecondition},
		{"unavailable", wrap(backend.ErrUnavailable), codes.Unavailable, codes.Unavailable},
		{"exists", wrap(backend.ErrExists), codes.AlreadyExists, codes.AlreadyExists},
		{"too small", wrap(backend.ErrTooSmall), codes.OutOfRange, codes.OutOfRange},
		{"snapshot not found", wrap(dirvol.ErrSnapshotNotFound), codes.NotFound, codes.NotFound},
		{"anything else", errors.New("boom"), codes.Internal, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for rpc, want := range map[lookupRPC]codes.Code{lookup: tc.lookup, noLookup: tc.noLookup} {
				err := toStatus(tc.err, rpc)
				st, ok := status.FromError(err)
				if !ok || st.Code() != want {
					t.Errorf("toStatus(%v, lookup=%v) = %v, want code %v", tc.err, rpc, err, want)
				}
				if st.Message() != tc.err.Error() {
					t.Errorf("message %q, want the error's text %q", st.Message(), tc.err.Error())
				}
			}
		})
	}
	if toStatus(nil, lookup) != nil {
		t.Error("toStatus(nil) is not nil")
	}
	// A status created here passes through unchanged.
	if err := toStatus(invalidArg("x"), lookup); status.Code(err) != codes.InvalidArgument {
		t.Errorf("status re-mapped to %v", status.Code(err))
	}
}
