// Command mongo-rs-agent keeps a MongoDB StatefulSet's pods in one replica
// set: ordinal 0 initiates it (only when that is safe), every other pod adds
// itself through the primary, and nobody is ever removed automatically.
//
// It runs as a second container in each mongo pod and needs no Kubernetes
// API access: peers are found by DNS through the headless Service
// (publishNotReadyAddresses: true). See ../README.md.
//
// Configuration comes from the environment (flags override):
//
//	POD_NAME        pod name, from the downward API (required)
//	POD_NAMESPACE   namespace, from the downward API (required)
//	SVC             headless Service name (mongo)
//	RS              replica set name, as in mongod --replSet (rs0)
//	PORT            mongod port (27017)
//	DOMAIN          cluster domain (cluster.local)
//	INITIATE        auto: ordinal 0 may initiate; never: join only (auto)
//	INITIATE_DELAY  how long initiation must stay safe before it happens (30s)
//	INTERVAL        pause between rounds while not a member (10s)
//	SCAN_ORDINALS   ordinals 0..N-1 are looked up as peers (16)
//	TIMEOUT         per-call timeout to a mongod (5s)
//	MONGO_USERNAME, MONGO_PASSWORD, MONGO_AUTH_SOURCE
//	                optional credentials (with --keyFile and users)
//	LOG_LEVEL       debug, info, warn, error (info)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/carve-csi/carve/examples/mongo-statefulset/agent/internal/mongoadmin"
	"github.com/carve-csi/carve/examples/mongo-statefulset/agent/internal/rsagent"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mongo-rs-agent:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mongo-rs-agent", flag.ContinueOnError)
	pod := fs.String("pod", os.Getenv("POD_NAME"), "pod name `POD_NAME`")
	ns := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace `POD_NAMESPACE`")
	svc := fs.String("service", env("SVC", "mongo"), "headless Service `SVC`")
	rs := fs.String("replset", env("RS", "rs0"), "replica set name `RS`")
	port := fs.Int("port", envInt("PORT", 27017), "mongod port `PORT`")
	domain := fs.String("domain", env("DOMAIN", "cluster.local"), "cluster domain `DOMAIN`")
	initiate := fs.String("initiate", env("INITIATE", string(rsagent.InitiateAuto)), "auto or never `INITIATE`")
	delay := fs.Duration("initiate-delay", envDuration("INITIATE_DELAY", 30*time.Second), "`INITIATE_DELAY`")
	interval := fs.Duration("interval", envDuration("INTERVAL", 10*time.Second), "`INTERVAL` between rounds")
	scan := fs.Int("scan-ordinals", envInt("SCAN_ORDINALS", 16), "peer ordinals looked up `SCAN_ORDINALS`")
	timeout := fs.Duration("timeout", envDuration("TIMEOUT", 5*time.Second), "per-call `TIMEOUT`")
	logLevel := fs.String("log-level", env("LOG_LEVEL", "info"), "`LOG_LEVEL`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println("mongo-rs-agent", version)
		return nil
	}
	if err := errors.Join(envErrs...); err != nil {
		return err
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	id, err := rsagent.NewIdentity(*pod, *svc, *ns, *domain, *port)
	if err != nil {
		return fmt.Errorf("identity (set POD_NAME and POD_NAMESPACE from the downward API): %w", err)
	}
	mode, err := rsagent.ParseInitiateMode(*initiate)
	if err != nil {
		return err
	}
	if *rs == "" || *scan < 1 || *interval <= 0 || *delay < 0 {
		return errors.New("RS must be set, SCAN_ORDINALS ≥ 1, INTERVAL > 0, INITIATE_DELAY ≥ 0")
	}
	if id.Ordinal >= *scan {
		*scan = id.Ordinal + 1 // at least up to ourselves
	}

	admin := mongoadmin.New(mongoadmin.Options{
		Timeout:    *timeout,
		Username:   os.Getenv("MONGO_USERNAME"),
		Password:   os.Getenv("MONGO_PASSWORD"),
		AuthSource: os.Getenv("MONGO_AUTH_SOURCE"),
	})
	agent := rsagent.New(rsagent.Settings{
		SetName:        *rs,
		Self:           id,
		LocalAddr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)),
		ScanOrdinals:   *scan,
		Initiate:       mode,
		InitiateDelay:  *delay,
		Interval:       *interval,
		MemberInterval: 3 * *interval,
	}, admin, netResolver{timeout: *timeout}, log)

	// The kubelet sends SIGTERM to both containers when the pod stops.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.Run(ctx)
}

// netResolver looks names up with the system resolver, /etc/hosts first, as
// mongod does: the names the agent checks are the ones mongod must resolve.
// (Pod FQDNs have five dots, so with the usual ndots:5 they are tried as
// absolute names first.)
type netResolver struct{ timeout time.Duration }

func (r netResolver) Resolves(ctx context.Context, name string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err := net.DefaultResolver.LookupHost(ctx, name)
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return false, nil
	}
	return false, fmt.Errorf("lookup %s: %w", name, err)
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envErrs collects malformed environment values; run refuses to start on any.
var envErrs []error

func envInt(key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q: %w", key, s, err))
	}
	return v
}

func envDuration(key string, def time.Duration) time.Duration {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q: %w", key, s, err))
	}
	return v
}
