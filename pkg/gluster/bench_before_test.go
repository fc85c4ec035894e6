package gluster

import "context"

// legacyBackend is the backend as it was before CLI sessions and the quota
// state memory, for BenchmarkGlusterCreate's side-by-side figures.
func legacyBackend(opts Options) *Backend {
	opts.NewExecutor = func(context.Context, []string, ExecutorSpec) (Executor, error) {
		return &LocalExecutor{Socket: opts.GlusterdSocket, OneShot: true}, nil
	}
	b := New(opts)
	b.noQuotaCache = true
	return b
}
