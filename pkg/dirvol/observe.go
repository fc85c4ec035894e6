package dirvol

import "context"

// CopyKind says what a copy is for (the kind label of the copy metrics).
type CopyKind string

// The copies carve makes in the directory layout.
const (
	CopySnapshot CopyKind = "snapshot"
	CopyRestore  CopyKind = "restore"
	CopyClone    CopyKind = "clone"
)

// CopyObserver hears about copies as they run, so a front door can expose
// their progress (the CSI driver turns it into Prometheus metrics) without
// this package knowing how. It must be safe for concurrent use.
type CopyObserver interface {
	// CopyStarted is called when a copy starts; the copy then reports to
	// the CopyProgress it returns.
	CopyStarted(kind CopyKind) CopyProgress
}

// CopyProgress follows one copy. Copied is called for every file and every
// chunk of a large file, so it must be cheap.
type CopyProgress interface {
	// Copied adds what was done since the last call: files finished, bytes
	// of file data carried over and, of those, bytes shared by FICLONE.
	Copied(files, bytes, reflinkedBytes int64)
	// Finished is called once, with the copy's totals and its error (nil
	// on success).
	Finished(stats CopyStats, err error)
}

type observerKey struct{}

// WithCopyObserver returns a context whose copies report to o.
func WithCopyObserver(ctx context.Context, o CopyObserver) context.Context {
	return context.WithValue(ctx, observerKey{}, o)
}

func copyObserver(ctx context.Context) CopyObserver {
	o, _ := ctx.Value(observerKey{}).(CopyObserver)
	return o
}

// noProgress: no observer in the context.
type noProgress struct{}

func (noProgress) Copied(int64, int64, int64) {}
func (noProgress) Finished(CopyStats, error)  {}
