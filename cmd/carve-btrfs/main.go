// Command carve-btrfs is carve's btrfs helper: installed on an NFS server
// whose exports are btrfs, it lets carve (StorageClass layout: btrfs,
// btrfsExecutor: ssh) make subvolumes, qgroup limits and snapshots there
// over ssh. Each call resolves its paths beneath the share without
// following symlinks and answers one JSON object on stdout
// (pkg/dirvol/btrfsremote.go; docs/snapshots.md).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/carve-csi/carve/pkg/buildinfo"
	"github.com/carve-csi/carve/pkg/dirvol"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: %s --share EXPORT [--id SHARE-ID] -- CALL ARGS...\n\n"+
			"carve's btrfs helper, run by carve over ssh on the NFS server (docs/snapshots.md).\n\n", os.Args[0])
		flag.PrintDefaults()
	}
	share := flag.String("share", "", "the share's path on this server (the StorageClass's share: the export path)")
	id := flag.String("id", "", "the share identity carve verified (its .carve-share); empty: any carve share")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println("carve-btrfs", buildinfo.Version)
		return
	}
	a := dirvol.ServeBtrfs(*share, *id, flag.Args())
	if err := json.NewEncoder(os.Stdout).Encode(a); err != nil {
		os.Exit(2)
	}
	if a.Error != nil {
		fmt.Fprintln(os.Stderr, a.Error.Message)
		os.Exit(1)
	}
}
