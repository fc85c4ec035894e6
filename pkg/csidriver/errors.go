package csidriver

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// This file is the only place that turns errors into gRPC status codes.
//
//	error                                   code
//	context.DeadlineExceeded                DeadlineExceeded
//	context.Canceled                        Canceled
//	errIncompatible, backend.ErrExists      AlreadyExists (same name or target, different request)
//	backend.ErrTooSmall                     OutOfRange (a size below the data source's)
//	errBusy, backend.ErrBusy                Aborted (another call on the volume is running)
//	backend.ErrInvalid (params.ErrInvalid)  InvalidArgument
//	params.ErrOptionLike                    InvalidArgument (a value that reads as an option)
//	volid.ErrMalformed                      NotFound where the RPC looks a volume up
//	                                        (no carve volume can have that ID), else InvalidArgument
//	backend.ErrNotFound, dirvol.ErrNotFound NotFound
//	dirvol.ErrSnapshotNotFound
//	backend.ErrConflict, dirvol.ErrUnsafe   FailedPrecondition (the storage must be fixed first)
//	backend.ErrUnavailable,                 Unavailable (retry)
//	dirvol.ErrShareUnverified
//	anything else                           Internal

var (
	// errIncompatible: the name (or target path) is taken by a request that
	// differs from this one.
	errIncompatible = errors.New("incompatible with the existing volume")
	// errBusy: another call holds the volume's lock.
	errBusy = errors.New("an operation on this volume is already in progress")
)

// lookupRPC tells toStatus whether a malformed ID means "no such volume".
type lookupRPC bool

const (
	lookup   lookupRPC = true  // the RPC looks a volume up by ID
	noLookup lookupRPC = false // the ID is an argument, not a key
)

// toStatus maps a core error to a gRPC status error; nil stays nil.
func toStatus(err error, rpc lookupRPC) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already mapped (a validation error from this package)
	}
	return status.Error(codeOf(err, rpc), err.Error())
}

func codeOf(err error, rpc lookupRPC) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, errIncompatible), errors.Is(err, backend.ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, backend.ErrTooSmall):
		return codes.OutOfRange
	case errors.Is(err, errBusy), errors.Is(err, backend.ErrBusy):
		return codes.Aborted
	case errors.Is(err, params.ErrOptionLike):
		// Hostile, not merely unknown: refused as an argument even where
		// a malformed ID otherwise means "no such volume".
		return codes.InvalidArgument
	case errors.Is(err, volid.ErrMalformed):
		if rpc == lookup {
			return codes.NotFound
		}
		return codes.InvalidArgument
	case errors.Is(err, backend.ErrInvalid), errors.Is(err, dirvol.ErrPermanent):
		return codes.InvalidArgument
	case errors.Is(err, backend.ErrNotFound), errors.Is(err, dirvol.ErrNotFound), errors.Is(err, dirvol.ErrSnapshotNotFound):
		return codes.NotFound
	case errors.Is(err, backend.ErrConflict), errors.Is(err, dirvol.ErrUnsafe):
		return codes.FailedPrecondition
	case errors.Is(err, backend.ErrUnavailable), errors.Is(err, dirvol.ErrShareUnverified):
		return codes.Unavailable
	}
	return codes.Internal
}

// invalidArg reports a missing or malformed request field.
func invalidArg(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
