// Package netnstest gives a test a second network address that is not
// loopback: a network namespace joined to the host by a veth pair on a
// private /30 (10.200.x.y/30: the host end is .1, the namespace end .2).
// A server bound to HostIP and reached with the NS's Client sees the
// request come from NSIP, as it would from another pod.
//
// It owns the namespace and both veth ends for the life of one test and
// removes them at cleanup (and those left by test processes that died).
// It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip command of
// iproute2; where a namespace cannot be made the test fails, it never
// skips: CI must not pass without the check it was asked for.
package netnstest
