package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultSegmentBytes is the segment size used when Options.SegmentBytes is 0.
const DefaultSegmentBytes = 64 << 20

// DefaultReserveMin and DefaultReserveMax bound the default ReserveBytes,
// 1% of the volume.
const (
	DefaultReserveMin = 64 << 10
	DefaultReserveMax = 1 << 20
)

// defaultReserve is the ReserveBytes used for a volume of total bytes.
func defaultReserve(total int64) int64 {
	return min(max(total/100, DefaultReserveMin), DefaultReserveMax)
}

// Options configures a Log. The zero value of each field but Dir is usable.
type Options struct {
	// Dir holds the segments and the checkpoint; Open creates it. Required.
	Dir string
	// SegmentBytes is the size at which a segment is rolled: a record goes to
	// a new segment when it would make the current one exceed SegmentBytes.
	// A record never spans segments; a larger record gets a segment of its
	// own. 0 ⇒ DefaultSegmentBytes (64 MiB).
	SegmentBytes int64
	// MaxBytes limits the framed bytes appended and not yet committed; an
	// Append beyond it fails with ErrFull. 0 ⇒ no limit.
	MaxBytes int64
	// ReserveBytes is the free space the volume must keep: an Append that
	// would leave less fails with an error wrapping syscall.ENOSPC, so that
	// a full disk never blocks the way out (a new segment, the directory,
	// the file system's own metadata; on copy-on-write file systems the
	// checkpoint's overwrite too). 0 ⇒ 1% of the volume, at least
	// DefaultReserveMin (64 KiB) and at most DefaultReserveMax (1 MiB).
	ReserveBytes int64
	// Logger receives recovery and disk-error events. nil ⇒ discard.
	Logger *slog.Logger
	// Now stamps each record. nil ⇒ time.Now.
	Now func() time.Time

	// fs replaces the file system in tests. nil ⇒ the os package.
	fs fileSystem
}

// Validate reports the first invalid field of o.
func (o Options) Validate() error {
	switch {
	case o.Dir == "":
		return errors.New("validate options: Dir is empty")
	case o.SegmentBytes < 0:
		return fmt.Errorf("validate options: SegmentBytes %d is negative", o.SegmentBytes)
	case o.MaxBytes < 0:
		return fmt.Errorf("validate options: MaxBytes %d is negative", o.MaxBytes)
	case o.ReserveBytes < 0:
		return fmt.Errorf("validate options: ReserveBytes %d is negative", o.ReserveBytes)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.fs == nil {
		o.fs = osFS{}
	}
	return o
}
