package params

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	v := Vars{
		Namespace:   "db",
		Name:        "data-mongo-0",
		PVName:      "pvc-1234",
		Labels:      map[string]string{"app": "mongo", "app.kubernetes.io/name": "mongodb"},
		Annotations: map[string]string{"team": "storage"},
	}
	cases := []struct {
		pattern string
		want    []string
	}{
		{DefaultPathPattern, []string{"db", "data-mongo-0"}},
		{"${pvc.metadata.name}", []string{"data-mongo-0"}},
		{"${pv.metadata.name}", []string{"pvc-1234"}},
		{"tenants/${pvc.metadata.namespace}-${pvc.metadata.name}", []string{"tenants", "db-data-mongo-0"}},
		{"${pvc.metadata.labels['app']}/${pvc.metadata.name}", []string{"mongo", "data-mongo-0"}},
		{`${pvc.metadata.labels["app.kubernetes.io/name"]}/x`, []string{"mongodb", "x"}},
		{"${pvc.metadata.annotations['team']}/${pvc.metadata.namespace}", []string{"storage", "db"}},
	}
	for _, tc := range cases {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		got, err := p.Render(v)
		if err != nil {
			t.Fatalf("Render(%q): %v", tc.pattern, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Render(%q) = %q, want %q", tc.pattern, got, tc.want)
		}
	}
}

// Labels and annotations are written by whoever creates the claim: every
// attempt to leave the share or forge carve's folders must fail.
func TestRenderRejectsHostileMetadata(t *testing.T) {
	hostile := []string{
		"..", ".", "", "../../etc", "a/b", "/etc", `a\b`, "x\x00y", "x\ny", "tab\there", "\x7f",
		".carve-archive", ".carve-meta", strings.Repeat("a", 256), "\xff\xfe",
	}
	for _, pattern := range []string{
		"${pvc.metadata.labels['x']}",
		"${pvc.metadata.annotations['x']}",
		"${pvc.metadata.namespace}/${pvc.metadata.annotations['x']}",
	} {
		p, err := ParsePattern(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hostile {
			_, err := p.Render(Vars{Namespace: "ns", Name: "n", Labels: map[string]string{"x": h}, Annotations: map[string]string{"x": h}})
			if err == nil {
				t.Errorf("pattern %q with value %q rendered", pattern, h)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("pattern %q value %q: error %v is not ErrInvalid", pattern, h, err)
			}
		}
	}
	// The dot-dot trick also fails when the value sits next to literal text.
	p, _ := ParsePattern("${pvc.metadata.annotations['x']}")
	if _, err := p.Render(Vars{Annotations: map[string]string{"x": "../x"}}); err == nil {
		t.Error("../x rendered")
	}
}

func TestRenderMissingLabel(t *testing.T) {
	p, _ := ParsePattern("${pvc.metadata.labels['app']}")
	_, err := p.Render(Vars{Labels: map[string]string{}})
	if err == nil || !strings.Contains(err.Error(), `label "app"`) {
		t.Fatalf("error = %v", err)
	}
}

func TestNamespaced(t *testing.T) {
	for pattern, want := range map[string]bool{
		DefaultPathPattern:                                      true,
		"x/${pvc.metadata.namespace}/y":                         true,
		"${pvc.metadata.name}":                                  false,
		"${pvc.metadata.namespace}-${pvc.metadata.name}":        false, // forgeable by another tenant
		"${pvc.metadata.labels['a']}-${pvc.metadata.namespace}": false,
	} {
		p, err := ParsePattern(pattern)
		if err != nil {
			t.Fatal(err)
		}
		if p.Namespaced() != want {
			t.Errorf("Namespaced(%q) = %v", pattern, !want)
		}
	}
	if p, _ := ParsePattern("${pvc.metadata.labels['a']}"); !p.UsesMetadata() {
		t.Error("UsesMetadata false for a label pattern")
	}
}

// A rendering failure is the claim's fault: it names the claim's field and
// never reads as a StorageClass parameter error.
func TestRenderBlamesTheClaim(t *testing.T) {
	p, err := ParsePattern("${pvc.metadata.namespace}/${pvc.metadata.annotations['dir']}")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []Vars{
		{Namespace: "ns", Name: "c", Annotations: map[string]string{"dir": "../x"}},
		{Namespace: "ns", Name: "c"},
	} {
		_, err := p.Render(v)
		var r *Refusal
		if !errors.As(err, &r) || r.Kind != KindClaim || r.Field != `metadata.annotations["dir"]` || !errors.Is(err, ErrInvalid) {
			t.Fatalf("Render(%+v) = %v; want a claim refusal naming the annotation", v, err)
		}
		err = Blame(err, "ns/c", "cls")
		if msg := err.Error(); !strings.HasPrefix(msg, `fix PersistentVolumeClaim ns/c (metadata.annotations["dir"]): `) || strings.Contains(msg, "StorageClass") {
			t.Errorf("message %q", msg)
		}
	}
	_, err = Parse(map[string]string{"backend": "nfs"})
	if msg := Blame(err, "ns/c", "cls").Error(); !strings.HasPrefix(msg, "fix StorageClass cls: invalid StorageClass parameter") {
		t.Errorf("class refusal reads %q", msg)
	}
}

func TestMayNest(t *testing.T) {
	for _, tc := range []struct {
		p, q string
		want bool
	}{
		{"${pvc.metadata.namespace}", "${pvc.metadata.namespace}/${pvc.metadata.name}", true},
		{"db", "${pvc.metadata.namespace}/${pvc.metadata.name}", false},
		{"${pvc.metadata.namespace}/${pvc.metadata.name}", "scratch/${pvc.metadata.namespace}/${pvc.metadata.name}", false},
		{"db/${pvc.metadata.namespace}", "db/${pvc.metadata.namespace}/${pvc.metadata.name}", true},
		{"db", "web/${pvc.metadata.name}", false},
		{"scratch/${pvc.metadata.namespace}", "scratch/${pvc.metadata.namespace}/${pvc.metadata.name}", true},
		{"scratch/${pvc.metadata.namespace}", "data/${pvc.metadata.namespace}/${pvc.metadata.name}", false},
		{"${pvc.metadata.namespace}/${pvc.metadata.name}", "${pvc.metadata.namespace}/${pvc.metadata.name}", false},
		{"${pvc.metadata.namespace}/${pvc.metadata.name}", "${pvc.metadata.namespace}", false},
	} {
		p, err := ParsePattern(tc.p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParsePattern(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if got := MayNest(p, q); got != tc.want {
			t.Errorf("MayNest(%q, %q) = %v, want %v", tc.p, tc.q, got, tc.want)
		}
	}
}
