package main

import (
	"bytes"
	"testing"
)

// TestCLI_CommandTable: every command's entry is complete and names only
// variables the relay's configuration has.
func TestCLI_CommandTable(t *testing.T) {
	if err := newMain(&bytes.Buffer{}, &bytes.Buffer{}, nil).Check(); err != nil {
		t.Fatal(err)
	}
}
