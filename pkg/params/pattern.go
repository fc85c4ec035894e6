package params

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultPathPattern gives each claim a stable directory named after its
// namespace and name, so a StatefulSet replica finds its data again.
const DefaultPathPattern = "${pvc.metadata.namespace}/${pvc.metadata.name}"

// ReservedPrefix starts the names of carve's own folders at the share root;
// no rendered segment may start with it.
const ReservedPrefix = ".carve"

// Vars are the values a pattern may refer to.
type Vars struct {
	Namespace   string
	Name        string
	PVName      string
	Labels      map[string]string
	Annotations map[string]string
}

// Pattern is a parsed pathPattern: one template per path segment.
type Pattern struct {
	raw      string
	segments [][]token
}

type tokenKind int

const (
	literal tokenKind = iota
	varNamespace
	varName
	varPVName
	varLabel
	varAnnotation
)

type token struct {
	kind tokenKind
	text string // literal text or the label/annotation key
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.raw }

// Namespaced reports whether some segment is exactly ${pvc.metadata.namespace}.
// Only then does a rendered path identify one namespace: a namespace embedded in
// a longer segment ("${labels['x']}-${namespace}") can be forged by another tenant.
func (p *Pattern) Namespaced() bool {
	for _, seg := range p.segments {
		if len(seg) == 1 && seg[0].kind == varNamespace {
			return true
		}
	}
	return false
}

// UsesMetadata reports whether the pattern needs labels or annotations, which
// the CSI CreateVolume request does not carry.
func (p *Pattern) UsesMetadata() bool {
	for _, seg := range p.segments {
		for _, t := range seg {
			if t.kind == varLabel || t.kind == varAnnotation {
				return true
			}
		}
	}
	return false
}

// UsesClaim reports whether the pattern needs the claim's namespace or name,
// which a CSI CreateVolume carries only when the external-provisioner runs
// with --extra-create-metadata.
func (p *Pattern) UsesClaim() bool {
	for _, seg := range p.segments {
		for _, t := range seg {
			if t.kind == varNamespace || t.kind == varName {
				return true
			}
		}
	}
	return false
}

// ParsePattern parses a pathPattern. Literal parts must be valid path
// segments on their own; "/" separates segments.
func ParsePattern(s string) (*Pattern, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: %s is empty", ErrInvalid, PathPattern)
	}
	if strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") {
		return nil, fmt.Errorf("%w: %s=%q: must be relative, without a leading or trailing /", ErrInvalid, PathPattern, s)
	}
	p := &Pattern{raw: s}
	for _, segText := range splitSegments(s) {
		seg, err := parseSegment(segText)
		if err != nil {
			return nil, fmt.Errorf("%w: %s=%q: %w", ErrInvalid, PathPattern, s, err)
		}
		p.segments = append(p.segments, seg)
	}
	return p, nil
}

// splitSegments splits on "/" outside ${...}, so a label key such as
// "app.kubernetes.io/name" stays inside its variable.
func splitSegments(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch {
		case strings.HasPrefix(s[i:], "${"):
			depth++
			i++
		case s[i] == '}' && depth > 0:
			depth--
		case s[i] == '/' && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func parseSegment(s string) ([]token, error) {
	if s == "" {
		return nil, errors.New("empty path segment (\"//\")")
	}
	var toks []token
	for len(s) > 0 {
		i := strings.Index(s, "${")
		if i < 0 {
			toks = append(toks, token{kind: literal, text: s})
			break
		}
		if i > 0 {
			toks = append(toks, token{kind: literal, text: s[:i]})
		}
		end := strings.Index(s[i:], "}")
		if end < 0 {
			return nil, fmt.Errorf("unterminated variable %q", s[i:])
		}
		t, err := parseVar(s[i+2 : i+end])
		if err != nil {
			return nil, err
		}
		toks = append(toks, t)
		s = s[i+end+1:]
	}
	for _, t := range toks {
		if t.kind == literal {
			if strings.Contains(t.text, "$") {
				return nil, fmt.Errorf("stray %q in %q: variables are written ${...}", "$", t.text)
			}
			if err := checkChars(t.text); err != nil {
				return nil, err
			}
		}
	}
	if len(toks) == 1 && toks[0].kind == literal {
		if err := CheckSegment(toks[0].text); err != nil {
			return nil, err
		}
	}
	return toks, nil
}

func parseVar(v string) (token, error) {
	switch v {
	case "pvc.metadata.namespace":
		return token{kind: varNamespace}, nil
	case "pvc.metadata.name":
		return token{kind: varName}, nil
	case "pv.metadata.name":
		return token{kind: varPVName}, nil
	}
	for prefix, kind := range map[string]tokenKind{"pvc.metadata.labels[": varLabel, "pvc.metadata.annotations[": varAnnotation} {
		if !strings.HasPrefix(v, prefix) || !strings.HasSuffix(v, "]") {
			continue
		}
		key := v[len(prefix) : len(v)-1]
		if len(key) >= 2 && (key[0] == '\'' || key[0] == '"') && key[len(key)-1] == key[0] {
			key = key[1 : len(key)-1]
		} else {
			return token{}, fmt.Errorf("variable ${%s}: quote the key, e.g. ['app']", v)
		}
		if key == "" {
			return token{}, fmt.Errorf("variable ${%s}: empty key", v)
		}
		return token{kind: kind, text: key}, nil
	}
	return token{}, fmt.Errorf("unknown variable ${%s} (known: pvc.metadata.namespace, pvc.metadata.name, "+
		"pvc.metadata.labels['KEY'], pvc.metadata.annotations['KEY'], pv.metadata.name)", v)
}

// Render returns the path segments for a claim. Every segment is checked
// after substitution: labels and annotations are user input and may try to
// climb out of the share ("..", "a/b") or collide with carve's own folders.
func (p *Pattern) Render(v Vars) ([]string, error) {
	out := make([]string, 0, len(p.segments))
	for _, seg := range p.segments {
		var b strings.Builder
		for _, t := range seg {
			switch t.kind {
			case literal:
				b.WriteString(t.text)
			case varNamespace:
				b.WriteString(v.Namespace)
			case varName:
				b.WriteString(v.Name)
			case varPVName:
				b.WriteString(v.PVName)
			case varLabel, varAnnotation:
				m, what := v.Labels, "label"
				if t.kind == varAnnotation {
					m, what = v.Annotations, "annotation"
				}
				val, ok := m[t.text]
				if !ok {
					return nil, ClaimRefusal(t.field(), fmt.Errorf("%s=%q needs the claim's %s %q, which is not set", PathPattern, p.raw, what, t.text))
				}
				b.WriteString(val)
			}
		}
		s := b.String()
		if err := CheckSegment(s); err != nil {
			// Literals were checked when the class was parsed: the claim's
			// values made this segment unsafe.
			return nil, ClaimRefusal(segmentFields(seg), fmt.Errorf("%s=%q renders an unsafe path segment: %w", PathPattern, p.raw, err))
		}
		out = append(out, s)
	}
	return out, nil
}

// CheckSegment accepts exactly one safe path segment.
func CheckSegment(s string) error {
	switch {
	case s == "":
		return errors.New("empty segment")
	case s == "." || s == "..":
		return fmt.Errorf("segment %q is not allowed", s)
	case strings.ContainsAny(s, "/\\"):
		return fmt.Errorf("segment %q contains a path separator", s)
	case strings.HasPrefix(s, ReservedPrefix):
		return fmt.Errorf("segment %q starts with %q, reserved for carve's own folders", s, ReservedPrefix)
	case len(s) > 255:
		return fmt.Errorf("segment of %d bytes is longer than 255", len(s))
	}
	return checkChars(s)
}

func checkChars(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("segment %q is not valid UTF-8", s)
	}
	for _, r := range s {
		if r == 0 || unicode.IsControl(r) {
			return fmt.Errorf("segment %q contains a control character", s)
		}
	}
	return nil
}

// field names the claim field a variable reads.
func (t token) field() string {
	switch t.kind {
	case varNamespace:
		return "metadata.namespace"
	case varName:
		return "metadata.name"
	case varPVName:
		return "metadata.uid"
	case varLabel:
		return fmt.Sprintf("metadata.labels[%q]", t.text)
	case varAnnotation:
		return fmt.Sprintf("metadata.annotations[%q]", t.text)
	}
	return ""
}

// segmentFields names the claim fields one segment reads.
func segmentFields(seg []token) string {
	var fs []string
	for _, t := range seg {
		if f := t.field(); f != "" && !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	return strings.Join(fs, ", ")
}

// MayNest reports whether a path that p renders can be a proper ancestor of
// a path that q renders: claims of two classes on one share with such
// patterns can refuse each other, since volume directories never nest. Two
// segments can match when both are the same literal or both hold variables;
// a variable matching a literal (a namespace named "scratch" next to a
// "scratch/..." class) is not reported, or every class with a fixed first
// segment would warn beside the default pattern.
func MayNest(p, q *Pattern) bool {
	if p == nil || q == nil || len(p.segments) >= len(q.segments) {
		return false
	}
	for i, seg := range p.segments {
		a, aLit := literalSegment(seg)
		b, bLit := literalSegment(q.segments[i])
		if aLit != bLit || (aLit && a != b) {
			return false
		}
	}
	return true
}

func literalSegment(seg []token) (string, bool) {
	var b strings.Builder
	for _, t := range seg {
		if t.kind != literal {
			return "", false
		}
		b.WriteString(t.text)
	}
	return b.String(), true
}

// SameShare reports whether two classes carve on the same share.
func SameShare(a, b *Config) bool {
	return a.Backend == b.Backend && a.Share == b.Share && (a.Backend != BackendNFS || a.Server == b.Server)
}
