package redistest

import (
	"strings"
	"testing"
)

// Slot returns the Redis Cluster hash slot of key (CRC16/XMODEM of the key,
// or of its hash tag: the part between the first "{" and the next "}" when
// that part is not empty, modulo 16384), as CLUSTER KEYSLOT computes it.
// go-redis has the same function in its internal/hashtag, not exported.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}

// AssertSameSlot fails the test unless every key hashes to the same cluster
// slot: the condition for one Lua script, MULTI or multi-key command to run
// on a Redis Cluster without CROSSSLOT.
func AssertSameSlot(t testing.TB, keys ...string) {
	t.Helper()
	if len(keys) == 0 {
		return
	}
	want := Slot(keys[0])
	for _, k := range keys[1:] {
		if got := Slot(k); got != want {
			t.Errorf("key %q is in slot %d, key %q in slot %d: one operation cannot span them on a Redis Cluster", k, got, keys[0], want)
		}
	}
}
