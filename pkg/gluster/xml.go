package gluster

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrMalformed marks CLI output that is not the XML carve expects. It is
// never treated as success: a half-understood answer from a storage system
// is a failure.
var ErrMalformed = errors.New("malformed gluster CLI output")

// maxOutput bounds what Parse accepts (volume info of ~1000 volumes is a few MB).
const maxOutput = 64 << 20

// Output is one parsed `gluster --xml` answer.
type Output struct {
	// OpRet is the operation's result: 0 is success, anything else failure,
	// whatever the CLI's exit code was.
	OpRet   int
	OpErrno int
	// OpErrstr explains a failure; on success it may carry a warning (e.g.
	// "... is already part of a volume" for a forced volume create).
	OpErrstr string
	CLIOp    string
	Message  string // <output>, e.g. "Set volume successful"

	Volumes []Volume     // volume info
	Limits  []QuotaLimit // volume quota list
	UUID    string       // system:: uuid get
}

// Volume is one volume of `volume info`.
type Volume struct {
	Name         string
	ID           string
	Status       int    // 0 created, 1 started, 2 stopped
	StatusStr    string // Created, Started, Stopped
	BrickCount   int
	ReplicaCount int
	Type         string // typeStr: Distribute, Replicate, Disperse, ...
	Bricks       []Brick
	Options      []Option
}

// Volume states (<status>).
const (
	StatusCreated = 0
	StatusStarted = 1
	StatusStopped = 2
)

// Brick is one brick of a volume.
type Brick struct {
	Host     string
	Path     string
	HostUUID string
	Arbiter  bool
}

// String returns HOST:PATH, the form the CLI uses.
func (b Brick) String() string { return b.Host + ":" + b.Path }

// Option is a reconfigured volume option.
type Option struct {
	Name  string
	Value string
}

// Option returns the value of a reconfigured option and whether it is set.
func (v *Volume) Option(name string) (string, bool) {
	for _, o := range v.Options {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

// QuotaEnabled reports whether directory quota is on for the volume.
func (v *Volume) QuotaEnabled() bool {
	val, _ := v.Option("features.quota")
	return isOn(val)
}

func isOn(v string) bool {
	switch strings.ToLower(v) {
	case "on", "yes", "true", "enable", "1":
		return true
	}
	return false
}

// QuotaLimit is one entry of `volume quota VOL list`.
type QuotaLimit struct {
	Path string
	// HardLimit in bytes; -1 when the directory has no limit (N/A).
	HardLimit int64
	UsedSpace int64
	// AvailSpace in bytes; -1 when N/A.
	AvailSpace int64
}

// Raw XML shapes (cli/src/cli-xml-output.c). Scalars are slices so that a
// missing or repeated element is detected instead of silently defaulted.
type xmlOutput struct {
	XMLName  xml.Name    `xml:"cliOutput"`
	OpRet    []string    `xml:"opRet"`
	OpErrno  []string    `xml:"opErrno"`
	OpErrstr []string    `xml:"opErrstr"`
	CLIOp    string      `xml:"cliOp"`
	Output   string      `xml:"output"`
	VolInfo  []xmlVols   `xml:"volInfo"`
	VolQuota []xmlQuotas `xml:"volQuota"`
	UUID     []string    `xml:"uuidGenerate>uuid"`
}

type xmlVols struct {
	Volumes []xmlVolume `xml:"volumes>volume"`
	Count   []string    `xml:"volumes>count"`
}

type xmlVolume struct {
	Name         []string   `xml:"name"`
	ID           string     `xml:"id"`
	Status       []string   `xml:"status"`
	StatusStr    string     `xml:"statusStr"`
	BrickCount   string     `xml:"brickCount"`
	ReplicaCount string     `xml:"replicaCount"`
	TypeStr      string     `xml:"typeStr"`
	Bricks       []xmlBrick `xml:"bricks>brick"`
	OptCount     string     `xml:"optCount"`
	Options      []struct {
		Name  []string `xml:"name"`
		Value []string `xml:"value"`
	} `xml:"options>option"`
}

type xmlBrick struct {
	Name     []string `xml:"name"`
	HostUUID string   `xml:"hostUuid"`
	Arbiter  string   `xml:"isArbiter"`
}

type xmlQuotas struct {
	Limits []struct {
		Path       []string `xml:"path"`
		HardLimit  []string `xml:"hard_limit"`
		UsedSpace  []string `xml:"used_space"`
		AvailSpace []string `xml:"avail_space"`
	} `xml:"limit"`
}

// Parse decodes the output of `gluster --xml`. It is strict: the document
// must be exactly one <cliOutput> with exactly one integer <opRet> and
// <opErrno>, and the sections carve reads must be complete. It reports
// malformed output with ErrMalformed; a well-formed failure report is not an
// error here (see Output.OpRet).
func Parse(data []byte) (*Output, error) {
	if len(data) > maxOutput {
		return nil, fmt.Errorf("%w: %d bytes is more than %d", ErrMalformed, len(data), maxOutput)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: empty output", ErrMalformed)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	var raw xmlOutput
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// Nothing but whitespace, comments or processing instructions may follow.
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: after </cliOutput>: %w", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, fmt.Errorf("%w: text after </cliOutput>", ErrMalformed)
			}
		case xml.Comment, xml.ProcInst:
		default:
			return nil, fmt.Errorf("%w: content after </cliOutput>", ErrMalformed)
		}
	}

	out := &Output{CLIOp: strings.TrimSpace(raw.CLIOp), Message: strings.TrimSpace(raw.Output)}
	var err error
	if out.OpRet, err = oneInt("opRet", raw.OpRet); err != nil {
		return nil, err
	}
	if out.OpErrno, err = oneInt("opErrno", raw.OpErrno); err != nil {
		return nil, err
	}
	if len(raw.OpErrstr) > 1 {
		return nil, fmt.Errorf("%w: %d <opErrstr> elements", ErrMalformed, len(raw.OpErrstr))
	}
	if len(raw.OpErrstr) == 1 {
		out.OpErrstr = strings.TrimSpace(raw.OpErrstr[0])
	}
	if len(raw.VolInfo) > 1 || len(raw.VolQuota) > 1 || len(raw.UUID) > 1 {
		return nil, fmt.Errorf("%w: repeated section", ErrMalformed)
	}
	if len(raw.UUID) == 1 {
		out.UUID = strings.TrimSpace(raw.UUID[0])
	}
	if len(raw.VolInfo) == 1 {
		if out.Volumes, err = parseVolumes(raw.VolInfo[0]); err != nil {
			return nil, err
		}
	}
	if len(raw.VolQuota) == 1 {
		if out.Limits, err = parseLimits(raw.VolQuota[0]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func oneInt(name string, vals []string) (int, error) {
	if len(vals) != 1 {
		return 0, fmt.Errorf("%w: want one <%s>, found %d", ErrMalformed, name, len(vals))
	}
	n, err := strconv.Atoi(strings.TrimSpace(vals[0]))
	if err != nil {
		return 0, fmt.Errorf("%w: <%s>%s</%s> is not an integer", ErrMalformed, name, vals[0], name)
	}
	return n, nil
}

func optInt(name, v string) (int, error) {
	if strings.TrimSpace(v) == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%w: <%s>%s</%s> is not an integer", ErrMalformed, name, v, name)
	}
	return n, nil
}

func parseVolumes(raw xmlVols) ([]Volume, error) {
	if len(raw.Count) > 1 {
		return nil, fmt.Errorf("%w: %d <count> elements in <volumes>", ErrMalformed, len(raw.Count))
	}
	if len(raw.Count) == 1 {
		n, err := oneInt("count", raw.Count)
		if err != nil {
			return nil, err
		}
		if n != len(raw.Volumes) {
			return nil, fmt.Errorf("%w: <count>%d</count> but %d volumes", ErrMalformed, n, len(raw.Volumes))
		}
	}
	vols := make([]Volume, 0, len(raw.Volumes))
	for i, rv := range raw.Volumes {
		if len(rv.Name) != 1 || strings.TrimSpace(rv.Name[0]) == "" {
			return nil, fmt.Errorf("%w: volume %d has no single <name>", ErrMalformed, i)
		}
		v := Volume{Name: strings.TrimSpace(rv.Name[0]), ID: strings.TrimSpace(rv.ID),
			StatusStr: strings.TrimSpace(rv.StatusStr), Type: strings.TrimSpace(rv.TypeStr)}
		var err error
		if v.Status, err = oneInt("status", rv.Status); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if v.BrickCount, err = optInt("brickCount", rv.BrickCount); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if v.ReplicaCount, err = optInt("replicaCount", rv.ReplicaCount); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for _, rb := range rv.Bricks {
			if len(rb.Name) != 1 {
				return nil, fmt.Errorf("%w: volume %s: brick without a single <name>", ErrMalformed, v.Name)
			}
			host, p, ok := splitBrick(strings.TrimSpace(rb.Name[0]))
			if !ok {
				return nil, fmt.Errorf("%w: volume %s: brick %q is not HOST:/PATH", ErrMalformed, v.Name, rb.Name[0])
			}
			v.Bricks = append(v.Bricks, Brick{Host: host, Path: p, HostUUID: strings.TrimSpace(rb.HostUUID),
				Arbiter: strings.TrimSpace(rb.Arbiter) == "1"})
		}
		if v.BrickCount != 0 && v.BrickCount != len(v.Bricks) {
			return nil, fmt.Errorf("%w: volume %s: <brickCount>%d</brickCount> but %d bricks", ErrMalformed, v.Name, v.BrickCount, len(v.Bricks))
		}
		for _, ro := range rv.Options {
			if len(ro.Name) != 1 || len(ro.Value) != 1 || strings.TrimSpace(ro.Name[0]) == "" {
				return nil, fmt.Errorf("%w: volume %s: option without a single <name> and <value>", ErrMalformed, v.Name)
			}
			v.Options = append(v.Options, Option{Name: strings.TrimSpace(ro.Name[0]), Value: strings.TrimSpace(ro.Value[0])})
		}
		if n, err := optInt("optCount", rv.OptCount); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		} else if strings.TrimSpace(rv.OptCount) != "" && n != len(v.Options) {
			return nil, fmt.Errorf("%w: volume %s: <optCount>%d</optCount> but %d options", ErrMalformed, v.Name, n, len(v.Options))
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// splitBrick splits "host:/path" and "[v6]:/path".
func splitBrick(s string) (string, string, bool) {
	var host, p string
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", false
		}
		host, p = s[:end+1], s[end+2:]
	} else {
		i := strings.Index(s, ":/")
		if i <= 0 {
			return "", "", false
		}
		host, p = s[:i], s[i+1:]
	}
	return host, p, host != "" && strings.HasPrefix(p, "/")
}

func parseLimits(raw xmlQuotas) ([]QuotaLimit, error) {
	limits := make([]QuotaLimit, 0, len(raw.Limits))
	for i, rl := range raw.Limits {
		if len(rl.Path) != 1 || !strings.HasPrefix(strings.TrimSpace(rl.Path[0]), "/") {
			return nil, fmt.Errorf("%w: quota limit %d has no single absolute <path>", ErrMalformed, i)
		}
		l := QuotaLimit{Path: strings.TrimSpace(rl.Path[0])}
		var err error
		if l.HardLimit, err = sizeOrNA("hard_limit", rl.HardLimit); err != nil {
			return nil, fmt.Errorf("quota limit %s: %w", l.Path, err)
		}
		// Gluster's accounting can go transiently negative; report it as is.
		if l.UsedSpace, err = sizeOrNA("used_space", rl.UsedSpace); err != nil {
			return nil, fmt.Errorf("quota limit %s: %w", l.Path, err)
		}
		if l.AvailSpace, err = sizeOrNA("avail_space", rl.AvailSpace); err != nil {
			return nil, fmt.Errorf("quota limit %s: %w", l.Path, err)
		}
		limits = append(limits, l)
	}
	return limits, nil
}

// sizeOrNA parses a byte count, or "N/A" as -1.
func sizeOrNA(name string, vals []string) (int64, error) {
	if len(vals) != 1 {
		return 0, fmt.Errorf("%w: want one <%s>, found %d", ErrMalformed, name, len(vals))
	}
	v := strings.TrimSpace(vals[0])
	if v == "N/A" {
		return -1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || (n < 0 && name != "used_space") {
		return 0, fmt.Errorf("%w: <%s>%s</%s> is not a byte count", ErrMalformed, name, v, name)
	}
	return n, nil
}
