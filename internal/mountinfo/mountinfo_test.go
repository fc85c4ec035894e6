package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`:  "/mnt/a b",
		`/x\011y\012z`: "/x\ty\nz",
		`/back\134sl`:  `/back\sl`,
		`/plain`:       "/plain",
		`/bad\09x`:     `/bad\09x`,
		`/short\04`:    `/short\04`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
