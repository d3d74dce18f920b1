package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// A memtable file left empty by a crash between its creation and its sizing
// does not stop the next Open, and what was written before stays.
func TestOpenAfterCrashLeftEmptyMemtable(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// What badger leaves when killed right after creating the file of its
	// next memtable.
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, zerolog.Nop())
	if err != nil {
		t.Fatalf("open after the crash: %v", err)
	}
	defer db.Close()
	if v, err := db.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("k = %q, %v; want v", v, err)
	}
}
