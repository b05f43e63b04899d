package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fileflow/fileflow/pkg/dlq"
	"github.com/fileflow/fileflow/pkg/jobctl"
)

// dlqFlags choose a dead-letter queue and, for list and redrive, a filter.
type dlqFlags struct {
	tf     targetFlags
	queue  string
	filter dlq.Filter
}

func (f *dlqFlags) add(cmd *cobra.Command, filters bool) {
	f.tf.add(cmd)
	cmd.Flags().StringVar(&f.queue, "queue", dlq.Tasks, "which DLQ: tasks (S3 events and task messages of files) or jobs (fan-out tasks)")
	if filters {
		cmd.Flags().StringVar(&f.filter.JobID, "job", "", "only task messages and fan-out tasks of this job")
		cmd.Flags().StringVar(&f.filter.Reason, "reason", "", "only messages with a file (or job) whose recorded reason or code contains this text (any case)")
	}
}

func (f *dlqFlags) open(cmd *cobra.Command) (*jobctl.Client, dlq.Queue, error) {
	c, err := f.tf.client(cmd.Context())
	if err != nil {
		return nil, dlq.Queue{}, err
	}
	q := dlq.Queue{Name: f.queue}
	switch f.queue {
	case dlq.Tasks:
		q.URL, q.DLQURL = c.Target.TasksQueueURL, c.Target.TasksDLQURL
	case dlq.Jobs:
		q.URL, q.DLQURL = c.Target.JobsQueueURL, c.Target.JobsDLQURL
	default:
		return nil, q, fmt.Errorf("--queue %q: want tasks or jobs", f.queue)
	}
	if q.URL == "" || q.DLQURL == "" {
		return nil, q, errNoQueueURL(f.queue)
	}
	return c, q, nil
}

// testRedriver, if set (tests), is called on each redriver before it runs.
var testRedriver func(*dlq.Redriver)

func dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq list|show|redrive|purge",
		Short: "Inspect, redrive or purge a dead-letter queue (tasks or jobs)",
		Long: "Dead-letter queues hold the messages that failed maxReceiveCount times. list and show peek at them without\n" +
			"consuming anything and decode each into the files (or the job's fan-out task) it carries, with each file's\n" +
			"last recorded error; redrive moves them back to their source queue once the cause is fixed; purge deletes\n" +
			"them for good.",
	}
	cmd.AddCommand(dlqListCmd(), dlqShowCmd(), dlqRedriveCmd(), dlqPurgeCmd())
	return cmd
}

func dlqListCmd() *cobra.Command {
	var (
		f      dlqFlags
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list [--queue tasks|jobs] [--job J] [--reason TEXT] [--json]",
		Short: "List a DLQ's messages (peeked, not consumed): what each carries and its last recorded error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, q, err := f.open(cmd)
			if err != nil {
				return err
			}
			stop := periodic(cmd.ErrOrStderr(), "dlq: peeking at "+q.DLQURL+"…", nil)
			msgs, err := (&dlq.Reader{SQS: c.SQS, Ledger: c.DB}).Peek(cmd.Context(), q, limit, false)
			stop()
			if err != nil {
				return err
			}
			msgs = filtered(msgs, f.filter)
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, msgs)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MESSAGE ID\tSENT\tRECEIVES\tSHAPE\tJOB\tFILES\tCARRIES\tLAST ERROR")
			for _, m := range msgs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.SentAt.Format(time.RFC3339), m.Receives, m.Shape, dash(m.JobID),
					len(m.Files), clip(carries(m), 60), clip(m.LastError()+redriveNote(m), 120))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "%d messages in the %s DLQ%s\n", len(msgs), q.Name, filterNote(f.filter))
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 1000, "read at most this many messages")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func dlqShowCmd() *cobra.Command {
	var (
		f      dlqFlags
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "show [MESSAGE_ID...] [--queue tasks|jobs] [--json]",
		Short: "Show DLQ messages in full (peeked, not consumed): every file with its ledger state, the body if undecodable",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, q, err := f.open(cmd)
			if err != nil {
				return err
			}
			msgs, err := (&dlq.Reader{SQS: c.SQS, Ledger: c.DB}).Peek(cmd.Context(), q, limit, true)
			if err != nil {
				return err
			}
			msgs = filtered(msgs, f.filter)
			if len(args) > 0 {
				want := map[string]bool{}
				for _, a := range args {
					want[a] = true
				}
				var keep []dlq.Message
				for _, m := range msgs {
					if want[m.ID] {
						keep = append(keep, m)
						delete(want, m.ID)
					}
				}
				if len(want) > 0 {
					var missing []string
					for id := range want {
						missing = append(missing, id)
					}
					return fmt.Errorf("not in the %s DLQ (or held by another reader): %s", q.Name, strings.Join(missing, ", "))
				}
				msgs = keep
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, msgs)
			}
			for i, m := range msgs {
				if i > 0 {
					fmt.Fprintln(out)
				}
				showMessage(out, m)
			}
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 1000, "read at most this many messages")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func showMessage(w io.Writer, m dlq.Message) {
	fmt.Fprintf(w, "message %s: %s, sent %s, %d receives\n", m.ID, m.Shape, m.SentAt.Format(time.RFC3339), m.Receives)
	if m.JobID != "" {
		fmt.Fprintf(w, "  job %s task %s%s%s\n", m.JobID, dash(m.TaskID), prefixed(" step ", m.Step), prefixed(", job ", m.JobStatus))
	}
	if m.Counted {
		fmt.Fprintln(w, "  the task was counted already: redriving it counts nothing")
	}
	if m.DecodeError != "" {
		fmt.Fprintf(w, "  undecodable: %s\n  body: %s\n", m.DecodeError, clip(m.Body, 2000))
	}
	if m.BadEntries > 0 {
		fmt.Fprintf(w, "  %d entries are not files\n", m.BadEntries)
	}
	if n := redriveNote(m); n != "" {
		fmt.Fprintf(w, " %s\n", n)
	}
	if len(m.Files) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  FILE\tSTATUS\tCODE\tATTEMPTS\tLAST ATTEMPT\tREASON")
	for _, f := range m.Files {
		last := "-"
		if f.LastAttempt != nil {
			last = f.LastAttempt.UTC().Format(time.RFC3339)
		}
		status := dash(f.Status)
		if f.Status == "" {
			status = "no record"
		}
		if f.OtherRevision != "" {
			status += " (record of " + f.OtherRevision + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", f.URI, status, dash(f.Code), f.Attempts, last, clip(f.Reason, 200))
	}
	_ = tw.Flush()
}

func dlqRedriveCmd() *cobra.Command {
	var (
		f      dlqFlags
		rate   float64
		max    int
		manual bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "redrive [--queue tasks|jobs] [--job J] [--reason TEXT] [--rate 50] [--max N]",
		Short: "Move DLQ messages back to their source queue, rate limited; interrupted, run it again to resume",
		Long: "Move the messages of a DLQ back to the queue they came from, at most --rate a second. Without a filter (and\n" +
			"without --manual or --max), SQS moves them itself (StartMessageMoveTask) where it can; elsewhere, and with\n" +
			"--job or --reason, each message is received, claimed in the ledger, sent to the source queue, marked sent\n" +
			"and only then deleted from the DLQ. Nothing is lost: a message leaves the DLQ only after its copy is sent and\n" +
			"recorded. Interrupted (Ctrl-C finishes the message in hand), run the same command again: a message already\n" +
			"sent is only deleted. Only a run that dies between a send and its record can send a second copy, and only if\n" +
			"the first was not processed yet when the next run looks; the pipeline makes that copy a duplicate (no\n" +
			"second output, no second count). Files already committed are skipped by the worker, never redone.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, q, err := f.open(cmd)
			if err != nil {
				return err
			}
			if rate <= 0 {
				return fmt.Errorf("--rate %v: want more than 0 messages a second", rate)
			}
			r := &dlq.Redriver{SQS: c.SQS, Ledger: c.DB}
			if testRedriver != nil {
				testRedriver(r)
			}
			var mu sync.Mutex
			var last dlq.Result
			began := time.Now()
			stop := periodic(cmd.ErrOrStderr(), "", func() string {
				mu.Lock()
				defer mu.Unlock()
				return progressLine(last, time.Since(began))
			})
			res, err := r.Redrive(cmd.Context(), dlq.Options{Queue: q, Rate: rate, Filter: f.filter, Max: max, MoveTask: !manual,
				Progress: func(p dlq.Result) { mu.Lock(); last = p; mu.Unlock() }})
			stop()
			out := cmd.OutOrStdout()
			if asJSON {
				if jerr := printJSON(out, res); jerr != nil {
					return jerr
				}
			} else {
				if res.MoveTaskUnavailable != "" {
					fmt.Fprintf(out, "StartMessageMoveTask is not available here (%s): moved by receive, send, delete\n", res.MoveTaskUnavailable)
				}
				fmt.Fprintln(out, summary(res, q))
			}
			switch {
			case res.Interrupted:
				return fmt.Errorf("redrive interrupted after %d messages: run it again to resume (what is left is still in the DLQ)", res.Done())
			case err != nil:
				return fmt.Errorf("redrive stopped after %d messages: %w (run it again to resume: nothing is lost)", res.Done(), err)
			}
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().Float64Var(&rate, "rate", 50, "at most this many messages a second")
	cmd.Flags().IntVar(&max, "max", 0, "stop after this many messages (0: all)")
	cmd.Flags().BoolVar(&manual, "manual", false, "never use StartMessageMoveTask: receive, send, delete with the ledger's markers")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func progressLine(r dlq.Result, elapsed time.Duration) string {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(r.Done()) / s
	}
	of := ""
	if r.ToMove > 0 {
		of = fmt.Sprintf(" of ~%d", r.ToMove)
	}
	return fmt.Sprintf("redrive %s: %d%s moved, %d skipped, %.1f msg/s", r.Queue, r.Done(), of, r.Skipped, rate)
}

func summary(r dlq.Result, q dlq.Queue) string {
	s := fmt.Sprintf("redrive %s DLQ → %s queue (%s): %d moved", q.Name, q.Name, r.Method, r.Done())
	if r.AlreadySent+r.Confirmed+r.Resent > 0 {
		s += fmt.Sprintf(" (%d sent now; resumed: %d already sent, %d confirmed sent by the ledger, %d sent again)",
			r.Moved, r.AlreadySent, r.Confirmed, r.Resent)
	}
	s += fmt.Sprintf(", %d left by the filter, ~%d in the DLQ now; %.1fs", r.Skipped, r.Left, r.Seconds)
	if r.Returned > 0 {
		s += fmt.Sprintf("\n%d of the copies failed again and are back in the DLQ: the cause is not fixed (fileflow dlq list shows their errors)", r.Returned)
	}
	if r.Left > r.Skipped+r.Returned {
		s += "\nsome messages were held by another reader (a peek, another redrive) or arrived meanwhile: run it again to move them"
	}
	return s
}

func dlqPurgeCmd() *cobra.Command {
	var (
		f      dlqFlags
		yes    bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "purge [--queue tasks|jobs] [--yes]",
		Short: "Delete every message of a DLQ for good, after a confirmation (or --yes)",
		Long: "Delete every message of a DLQ (SQS PurgeQueue: irreversible, and SQS allows one purge a minute). The files'\n" +
			"ledger records stay DEAD_LETTERED, and fileflow failures still lists them; their messages are gone, so\n" +
			"nothing brings them back but fileflow replay or a new upload. Asks to type the queue's name unless --yes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, q, err := f.open(cmd)
			if err != nil {
				return err
			}
			visible, inFlight, err := dlq.Depth(cmd.Context(), c.SQS, q.DLQURL)
			if err != nil {
				return err
			}
			if !yes {
				prompt := cmd.ErrOrStderr()
				name := q.Name + "-dlq"
				fmt.Fprintf(prompt, "This deletes about %d messages (%d visible, %d in flight) from %s for good.\nType %s to confirm: ",
					visible+inFlight, visible, inFlight, q.DLQURL, name)
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != name {
					fmt.Fprintln(prompt)
					return fmt.Errorf("%w: type %s, or pass --yes; nothing was deleted", dlq.ErrNotConfirmed, name)
				}
			}
			if err := dlq.Purge(cmd.Context(), c.SQS, q.DLQURL); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"queue": q.DLQURL, "purged_about": visible + inFlight})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %s (about %d messages)\n", q.DLQURL, visible+inFlight)
			return nil
		},
	}
	f.add(cmd, false)
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func filtered(msgs []dlq.Message, f dlq.Filter) []dlq.Message {
	if f.Empty() {
		return msgs
	}
	out := []dlq.Message{}
	for _, m := range msgs {
		if f.Match(m) {
			out = append(out, m)
		}
	}
	return out
}

func filterNote(f dlq.Filter) string {
	var parts []string
	if f.JobID != "" {
		parts = append(parts, "job "+f.JobID)
	}
	if f.Reason != "" {
		parts = append(parts, "reason containing "+fmt.Sprintf("%q", f.Reason))
	}
	if len(parts) == 0 {
		return ""
	}
	return " matching " + strings.Join(parts, " and ")
}

// carries names what a message carries: its first file and how many more, or its step.
func carries(m dlq.Message) string {
	switch {
	case len(m.Files) == 1:
		return m.Files[0].URI
	case len(m.Files) > 1:
		return fmt.Sprintf("%s and %d more", m.Files[0].URI, len(m.Files)-1)
	case m.Step != "":
		return "fan-out step " + m.Step
	}
	return "-"
}

func redriveNote(m dlq.Message) string {
	if m.Redrive == nil {
		return ""
	}
	switch m.Redrive.State {
	case "sent":
		return " [already sent by a redrive that stopped before deleting it: the next redrive only deletes it]"
	default:
		return " [claimed by a redrive that stopped before recording its send: the next redrive checks the ledger]"
	}
}
