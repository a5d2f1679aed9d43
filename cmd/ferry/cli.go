package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-sidecar/ferry/internal/adminclient"
)

// Exit codes of the subcommands.
const (
	exitOK    = 0
	exitFail  = 1 // the call failed
	exitUsage = 2 // bad arguments or environment
)

const usage = `Usage:
  ferry                                 run the sidecar (configured by FERRY_* variables)
  ferry status [--json]                 this sidecar's Redis, outbox and subscriptions
  ferry deadletters TOPIC [--limit N] [--json]
                                        this app's dead letters for TOPIC, oldest first (N: 1-1000, default 100)
  ferry redrive TOPIC [--json]          put this app's dead letters for TOPIC back into delivery
  ferry replay TOPIC --from TIME|ID [--json]
                                        redeliver TOPIC to this app from an RFC 3339 time or a stream id
  ferry version                         print the version
  ferry help                            print this help

The subcommands call the running sidecar's admin API at FERRY_ADMIN_ADDR
(default :7401, dialled on 127.0.0.1) with the token in FERRY_ADMIN_TOKEN or
FERRY_ADMIN_TOKEN_FILE (else FERRY_API_TOKEN or FERRY_API_TOKEN_FILE), and
time out after 5s. --json prints the admin API's JSON answer.
Exit codes: 0 done, 1 the call failed, 2 usage error.
`

// cli runs a subcommand. handled is false when args name none (no
// arguments: run the sidecar).
func cli(args []string, stdout, stderr io.Writer, version string) (code int, handled bool) {
	if len(args) == 0 {
		return 0, false
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-version", "--version":
		// Kept for scripts written before `ferry version`: stderr, as before.
		fmt.Fprintln(stderr, "ferry", version)
		return exitOK, true
	case "version":
		fmt.Fprintln(stdout, "ferry", version)
		return exitOK, true
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK, true
	case "status", "deadletters", "redrive", "replay":
		return subcommand(cmd, rest, stdout, stderr), true
	}
	fmt.Fprintf(stderr, "ferry: unknown command %q; run `ferry help`\n", cmd)
	return exitUsage, true
}

// cliArgs are a subcommand's parsed arguments.
type cliArgs struct {
	json  bool
	limit int
	from  string
	topic string
}

// parseArgs accepts flags before and after the positional TOPIC.
func parseArgs(cmd string, args []string) (cliArgs, error) {
	var a cliArgs
	fs := flag.NewFlagSet("ferry "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&a.json, "json", false, "")
	if cmd == "deadletters" {
		fs.IntVar(&a.limit, "limit", 0, "")
	}
	if cmd == "replay" {
		fs.StringVar(&a.from, "from", "", "")
	}
	var pos []string
	for range len(args) + 1 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return a, errHelp
			}
			return a, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	wantTopic := cmd != "status"
	switch {
	case wantTopic && len(pos) == 0:
		return a, errors.New("missing TOPIC")
	case wantTopic && len(pos) > 1, !wantTopic && len(pos) > 0:
		return a, fmt.Errorf("unexpected argument %q", pos[len(pos)-1])
	case cmd == "replay" && a.from == "":
		return a, errors.New("missing --from TIME|ID (an RFC 3339 time such as 2026-11-29T10:00:00Z, or a stream id such as 1764410400000-0)")
	}
	if wantTopic {
		a.topic = pos[0]
	}
	return a, nil
}

var errHelp = errors.New("help requested")

func subcommand(cmd string, args []string, stdout, stderr io.Writer) int {
	a, err := parseArgs(cmd, args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferry %s: %v; run `ferry help`\n", cmd, err)
		return exitUsage
	}
	opts, err := adminclient.FromEnv(nil)
	if err != nil {
		fmt.Fprintf(stderr, "ferry: invalid configuration: %v\n", err)
		return exitUsage
	}
	c := adminclient.New(opts)
	ctx, cancel := context.WithTimeout(context.Background(), adminclient.DefaultTimeout+time.Second)
	defer cancel()

	var raw []byte
	var show func(w io.Writer)
	switch cmd {
	case "status":
		var st adminclient.Status
		st, raw, err = c.Status(ctx)
		show = func(w io.Writer) { printStatus(w, st) }
	case "deadletters":
		var dls []adminclient.DeadLetter
		dls, raw, err = c.DeadLetters(ctx, a.topic, a.limit)
		show = func(w io.Writer) {
			if len(dls) == 0 {
				fmt.Fprintf(stderr, "no dead letters for topic %s\n", a.topic)
				return
			}
			printDeadLetters(w, dls)
		}
	case "redrive":
		var n int
		n, raw, err = c.Redrive(ctx, a.topic)
		show = func(w io.Writer) { fmt.Fprintf(w, "redriven %d dead letter%s of topic %s\n", n, plural(n), a.topic) }
	case "replay":
		var start string
		start, raw, err = c.Replay(ctx, a.topic, a.from)
		show = func(w io.Writer) { fmt.Fprintf(w, "replaying topic %s from stream id %s\n", a.topic, start) }
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferry: %v\n", err)
		return exitFail
	}
	if a.json {
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") != nil {
			buf.Reset()
			buf.Write(bytes.TrimSpace(raw))
		}
		buf.WriteByte('\n')
		_, _ = stdout.Write(buf.Bytes())
		return exitOK
	}
	show(stdout)
	return exitOK
}

func printStatus(w io.Writer, st adminclient.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	redis := "down"
	if st.Redis.Up {
		redis = "up"
	}
	fmt.Fprintf(tw, "APP ID\t%s\n", st.AppID)
	fmt.Fprintf(tw, "REDIS\t%s\n", redis)
	fmt.Fprintf(tw, "OUTBOX\t%d record%s, %s, oldest %s\n", st.Outbox.PendingRecords, plural(int(st.Outbox.PendingRecords)),
		bytesString(st.Outbox.Bytes), (time.Duration(st.Outbox.OldestAgeSeconds * float64(time.Second))).Round(time.Millisecond))
	_ = tw.Flush()
	fmt.Fprintln(w)
	if len(st.Subscriptions) == 0 {
		fmt.Fprintln(w, "no subscriptions")
		return
	}
	fmt.Fprintln(tw, "TOPIC\tROUTE\tBREAKER\tPENDING\tLAG")
	for _, s := range st.Subscriptions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", s.Topic, s.Route, s.Breaker, s.Pending, s.Lag)
	}
	_ = tw.Flush()
}

func printDeadLetters(w io.Writer, dls []adminclient.DeadLetter) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE ID\tREASON\tSTATUS\tATTEMPTS\tFAILED AT\tERROR")
	for _, d := range dls {
		status := "-"
		if d.Status != 0 {
			status = strconv.Itoa(d.Status)
		}
		errText := d.Error
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", d.MessageID, d.Reason, status, d.Attempts, d.FailedAt, strings.ReplaceAll(errText, "\t", " "))
	}
	_ = tw.Flush()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// bytesString prints a size the way people read it.
func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
