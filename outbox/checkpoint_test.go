package outbox

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func readCheckpointBytes(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, checkpointName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckpointOverwrittenInPlace: Open makes the checkpoint file once;
// Commit writes it in place, alternating slots, creating and renaming
// nothing, so it works on a volume where no file can be created.
func TestCheckpointOverwrittenInPlace(t *testing.T) {
	dir := t.TempDir()
	fsys := &faultFS{}
	l := openLog(t, Options{Dir: dir, fs: fsys})
	if b := readCheckpointBytes(t, dir); len(b) != cpFileSize {
		t.Fatalf("checkpoint file after Open: %d bytes, want %d", len(b), cpFileSize)
	}
	appendAll(t, l, names("r", 0, 4)...)
	entries, err := l.Read(Position{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// No file may be created from now on: what a full disk refuses.
	fsys.set(func(f *faultFS) {
		f.open = func(name string, flag int) error {
			if flag&os.O_CREATE != 0 {
				return syscall.ENOSPC
			}
			return nil
		}
	})
	for i, e := range entries {
		if err := l.Commit(e.Next); err != nil {
			t.Fatalf("Commit %d with no file creatable: %v", i, err)
		}
		b := readCheckpointBytes(t, dir)
		if len(b) != cpFileSize {
			t.Fatalf("checkpoint file %d bytes, want %d", len(b), cpFileSize)
		}
		p, seq, err := decodeCheckpointFile(b)
		if err != nil || p != e.Next {
			t.Fatalf("checkpoint file holds %v (%v), want %v", p, err, e.Next)
		}
		if want := uint64(i + 2); seq != want { // Open wrote seq 1
			t.Fatalf("slot sequence %d, want %d", seq, want)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, checkpointName+"*")); len(m) != 1 {
		t.Fatalf("checkpoint files %v, want only %s", m, checkpointName)
	}
}

// TestCheckpointTornSlot: a write torn in the newest slot leaves the one
// before it, which Open uses (records relayed again, none skipped); both
// slots damaged is the zero checkpoint.
func TestCheckpointTornSlot(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	appendAll(t, l, names("r", 0, 4)...)
	entries, err := l.Read(Position{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries[:3] {
		if err := l.Commit(e.Next); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	b := readCheckpointBytes(t, dir)
	_, seq, err := decodeCheckpointFile(b)
	if err != nil {
		t.Fatal(err)
	}
	// The newest slot is cut in the middle of its position.
	newest := cpSlotOffset(seq)
	copy(b[newest+16:newest+cpSlotSize], bytes.Repeat([]byte{0xff}, cpSlotSize-16))
	if err := os.WriteFile(filepath.Join(dir, checkpointName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, Options{Dir: dir})
	if got := l2.Checkpoint(); got != entries[1].Next {
		t.Fatalf("Checkpoint after a torn slot = %v, want the one before, %v", got, entries[1].Next)
	}
	got, _ := readAll(t, l2, l2.Checkpoint(), 0)
	assertRecords(t, got, names("r", 2, 4))
	// It commits on: the torn slot is the next one written.
	if err := l2.Commit(entries[3].Next); err != nil {
		t.Fatal(err)
	}
	l2.Close()
	l3 := openLog(t, Options{Dir: dir})
	if got := l3.Checkpoint(); got != entries[3].Next {
		t.Fatalf("Checkpoint after the next commit = %v, want %v", got, entries[3].Next)
	}
	l3.Close()

	b = readCheckpointBytes(t, dir)
	b[0] ^= 0xff
	b[cpStride] ^= 0xff
	if err := os.WriteFile(filepath.Join(dir, checkpointName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	l4 := openLog(t, Options{Dir: dir})
	got, _ = readAll(t, l4, l4.Checkpoint(), 0)
	assertRecords(t, got, names("r", 0, 4))
}

// TestCheckpointMigration: the 20-byte checkpoint of earlier versions is
// read and migrated in place at Open, keeping its bytes until the next
// commit, so that a migration cut short still reads as the old checkpoint.
func TestCheckpointMigration(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	appendAll(t, l, names("r", 0, 4)...)
	l.Close()
	legacy := encodeLegacyCheckpoint(Position{1, 2 * frame3})
	if err := os.WriteFile(filepath.Join(dir, checkpointName), legacy, 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, Options{Dir: dir})
	if got := l2.Checkpoint(); got != (Position{1, 2 * frame3}) {
		t.Fatalf("Checkpoint from the old format = %v", got)
	}
	l2.Close()
	b := readCheckpointBytes(t, dir)
	if len(b) != cpFileSize || !bytes.Equal(b[:len(legacy)], legacy) {
		t.Fatalf("migrated file: %d bytes, head %x; want %d bytes keeping %x", len(b), b[:len(legacy)], cpFileSize, legacy)
	}

	// Cut short: the file extended, the new slot not written.
	cut := make([]byte, cpFileSize)
	copy(cut, legacy)
	if err := os.WriteFile(filepath.Join(dir, checkpointName), cut, 0o644); err != nil {
		t.Fatal(err)
	}
	l3 := openLog(t, Options{Dir: dir})
	if got := l3.Checkpoint(); got != (Position{1, 2 * frame3}) {
		t.Fatalf("Checkpoint after a migration cut short = %v", got)
	}
	got, _ := readAll(t, l3, l3.Checkpoint(), 0)
	assertRecords(t, got, names("r", 2, 4))
}
