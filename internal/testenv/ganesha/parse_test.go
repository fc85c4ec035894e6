package ganesha

import (
	"slices"
	"testing"
)

func TestParseNFSLs(t *testing.T) {
	// Captured from nfs-ls (libnfs-utils 4.0.0, Debian 12).
	out := "-rw-r--r--  1     0     0            6 a.txt\n" +
		"drwxr-xr-x  4     0     0         4096 sub\n" +
		"lrwxrwxrwx  1     0     0            5 lnk\n" +
		"-rw-r--r--  1 65534 65534            0 .hidden\n" +
		"drwxr-xr-x  2     0     0         4096 deep dir\n"
	got, err := parseNFSLs([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.txt", "sub", "lnk", ".hidden", "deep dir"}
	if !slices.Equal(got, want) {
		t.Fatalf("parseNFSLs = %q, want %q", got, want)
	}
	if got, err := parseNFSLs(nil); err != nil || len(got) != 0 {
		t.Fatalf("parseNFSLs(empty) = %q, %v", got, err)
	}
	if _, err := parseNFSLs([]byte("Failed to mount nfs share\n")); err == nil {
		t.Fatal("parseNFSLs accepted garbage")
	}
}
