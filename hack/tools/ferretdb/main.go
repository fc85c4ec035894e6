// Command ferretdb runs FerretDB v1.24.0 (a MongoDB wire-protocol server)
// with its SQLite backend, for the MongoDB example's image. It is a small
// main around FerretDB's embeddable package: FerretDB's own cmd/ferretdb
// refuses to start when built outside its repository (it requires a
// generated build/version/version.txt).
//
//	ferretdb [--listen-addr :27017] [--state-dir /state]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// ferretVersion is FerretDB's module version, from the build information.
func ferretVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/FerretDB/FerretDB" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func main() {
	listen := flag.String("listen-addr", envOr("FERRETDB_LISTEN_ADDR", ":27017"), "TCP address to serve the MongoDB wire protocol on")
	state := flag.String("state-dir", envOr("FERRETDB_STATE_DIR", "/state"), "directory of the SQLite databases (the volume)")
	level := flag.String("log-level", envOr("FERRETDB_LOG_LEVEL", "info"), "debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("ferretdb version", ferretVersion(), "(sqlite backend)")
		return
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb: log level:", err)
		os.Exit(2)
	}
	if err := os.MkdirAll(*state, 0o750); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})),
		Handler:   "sqlite",
		SQLiteURL: "file:" + *state + "/",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	slog.Info("ferretdb serving", "version", ferretVersion(), "listen", *listen, "state", *state)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
