// Package tmpfstest mounts a small tmpfs for a test, so that the test meets a
// real full disk: the kernel's ENOSPC, not an injected error.
//
// Mounting needs root (CAP_SYS_ADMIN). Where it is impossible the test is
// skipped with the reason, unless FERRY_REQUIRE_TMPFS=1 (set by .ci/run):
// then it fails, so that CI never passes without having run these tests.
package tmpfstest
