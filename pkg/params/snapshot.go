package params

import (
	"fmt"
	"regexp"
)

// RestoreAcrossNamespaces lets a claim be filled from a snapshot or a volume
// of another namespace (StorageClass parameter, default false).
const RestoreAcrossNamespaces = "restoreAcrossNamespaces"

// MaxSnapshotEntry bounds snapshot entry names (pkg/dirvol's snapshot area,
// pkg/volid's snapshot IDs).
const MaxSnapshotEntry = 128

var snapshotEntryRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckSnapshotEntry accepts the names of snapshot entries: short, plain,
// never starting with a dot (carve's temporary entries do).
func CheckSnapshotEntry(entry string) error {
	if len(entry) > MaxSnapshotEntry || !snapshotEntryRE.MatchString(entry) {
		return fmt.Errorf("snapshot entry %q: want at most %d letters, digits, '.', '_' or '-', starting with a letter or digit",
			entry, MaxSnapshotEntry)
	}
	return nil
}

// CheckDataSource is the one rule for filling a claim from existing data (a
// snapshot, or a volume to clone): the data must come from the claim's own
// namespace unless the class sets restoreAcrossNamespaces. A source of
// unknown namespace ("": recorded without --extra-create-metadata) only
// fills claims of unknown namespace, or with the class's consent.
func (c *Config) CheckDataSource(sourceNamespace, claimNamespace string) error {
	if sourceNamespace == claimNamespace || c.RestoreAcrossNamespaces {
		return nil
	}
	return fmt.Errorf("%w: the data source belongs to namespace %q and the claim to %q; "+
		"set %s: \"true\" on the StorageClass to allow restores and clones across namespaces",
		ErrInvalid, sourceNamespace, claimNamespace, RestoreAcrossNamespaces)
}
