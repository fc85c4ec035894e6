package gluster

// BenchmarkGlusterCreate's "before" is the backend without CLI sessions and
// without the quota state memory.

func benchExecutor(before bool) Executor { return &LocalExecutor{OneShot: before} }

func benchBackend(opts Options, before bool) *Backend {
	b := New(opts)
	b.noQuotaCache = before
	return b
}
