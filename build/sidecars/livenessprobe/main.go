// Command carve-livenessprobe answers HTTP liveness probes for a CSI driver:
// GET /healthz calls the driver's Probe over its socket and answers 200 when
// it succeeds. It accepts the flags deploy/csi-driver gives the standard
// livenessprobe sidecar (--csi-address, --health-port, --probe-timeout,
// --http-endpoint), so an image of it is a drop-in replacement there.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/carve-csi/carve/build/sidecars/internal/csiconn"
)

var version = "dev"

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket")
	port := flag.Int("health-port", 9808, "TCP port for GET /healthz on all addresses")
	endpoint := flag.String("http-endpoint", "", "address for /healthz; overrides --health-port")
	probeTimeout := flag.Duration("probe-timeout", time.Second, "timeout of each Probe call")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Int("v", 0, "log verbosity (accepted for compatibility)")
	flag.Parse()
	if *showVersion {
		fmt.Println("carve-livenessprobe", version)
		return
	}
	conn, err := csiconn.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("dial %s: %v", *csiAddress, err)
	}
	defer conn.Close()
	addr := *endpoint
	if addr == "" {
		addr = net.JoinHostPort("", strconv.Itoa(*port))
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), *probeTimeout)
		defer cancel()
		if err := csiconn.Probe(ctx, conn); err != nil {
			log.Printf("probe failed: %v", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	log.Printf("carve-livenessprobe %s: %s on %s", version, *csiAddress, addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
