package benchmark

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Process groups of a CPU profile, in the order the report lists them.
const (
	GroupSelf     = "fileflow process (local runtime, mappings, bench loop)"
	GroupWorker   = "worker functions"
	GroupDispatch = "dispatch functions"
	GroupDynamoDB = "DynamoDB Local (Java)"
	GroupSQS      = "fauxqs (SQS, Node)"
	GroupS3       = "versitygw (S3)"
	GroupOther    = "other processes"
	GroupIdle     = "idle"
)

var groupOrder = []string{GroupSelf, GroupWorker, GroupDispatch, GroupDynamoDB, GroupSQS, GroupS3, GroupOther, GroupIdle}

// clockTicks is Linux's USER_HZ, the unit of /proc's CPU times (100 on every Linux ABI
// Go supports).
const clockTicks = 100

// CPUMeter measures where the machine's CPU time goes between [StartCPU] and
// [CPUMeter.Stop], by process group, from /proc. A process that exits in between loses
// its time (the local stack keeps its processes until it stops, so take Stop first).
type CPUMeter struct {
	start map[int]procTicks
	idle0 float64
	t0    time.Time
}

type procTicks struct {
	group string
	ticks float64
}

// StartCPU samples every process's CPU time now.
func StartCPU() (*CPUMeter, error) {
	procs, err := sampleProcs()
	if err != nil {
		return nil, err
	}
	idle, err := idleSeconds()
	if err != nil {
		return nil, err
	}
	return &CPUMeter{start: procs, idle0: idle, t0: time.Now()}, nil
}

// Stop samples again and returns each group's CPU over the interval: CPU seconds, share of
// the machine's capacity (wall × cores) and CPU milliseconds per file.
func (m *CPUMeter) Stop(files, cores int) ([]ProcessCPU, error) {
	wall := time.Since(m.t0).Seconds()
	end, err := sampleProcs()
	if err != nil {
		return nil, err
	}
	idle, err := idleSeconds()
	if err != nil {
		return nil, err
	}
	secs := map[string]float64{}
	for pid, p := range end {
		d := p.ticks - m.start[pid].ticks // a new process starts from 0
		if s, ok := m.start[pid]; ok && s.group != p.group {
			d = p.ticks // the pid was reused
		}
		if d > 0 {
			secs[p.group] += d / clockTicks
		}
	}
	secs[GroupIdle] = max(0, idle-m.idle0)
	return cpuLines(secs, wall, files, cores), nil
}

func cpuLines(secs map[string]float64, wall float64, files, cores int) []ProcessCPU {
	var out []ProcessCPU
	for _, g := range groupOrder {
		s, ok := secs[g]
		if !ok {
			continue
		}
		l := ProcessCPU{Name: g, CPUSeconds: round(s, 2)}
		if wall > 0 && cores > 0 {
			l.Share = round(s/(wall*float64(cores)), 3)
		}
		if files > 0 {
			l.PerFileMs = round(s*1000/float64(files), 3)
		}
		out = append(out, l)
	}
	return out
}

// sampleProcs reads every process's user + system CPU ticks and its group.
func sampleProcs() (map[int]procTicks, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("benchmark: cpu: %w", err)
	}
	self := os.Getpid()
	out := map[int]procTicks{}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		ticks, ppid, ok := statTicks(stat)
		if !ok {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out[pid] = procTicks{group: classify(pid, self, cmdline), ticks: ticks}
		parent[pid] = ppid
	}
	// Only this process and its descendants (the stack's servers and functions) are
	// named; anything else on the machine is "other".
	for pid, p := range out {
		if !descends(pid, self, parent) {
			p.group = GroupOther
			out[pid] = p
		}
	}
	return out, nil
}

func descends(pid, ancestor int, parent map[int]int) bool {
	for range 64 {
		if pid == ancestor {
			return true
		}
		pp, ok := parent[pid]
		if !ok || pp == 0 || pp == pid {
			return false
		}
		pid = pp
	}
	return false
}

// statTicks is utime + stime and the parent of a /proc/<pid>/stat line (fields 14, 15
// and 4; the command name, field 2, is in parentheses and may hold spaces).
func statTicks(stat []byte) (ticks float64, ppid int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), f[1] field 4 (ppid); utime is field 14, f[11]; stime f[12].
	if len(f) < 13 {
		return 0, 0, false
	}
	pp, err0 := strconv.Atoi(f[1])
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err0 != nil || err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return u + s, pp, true
}

// classify names a process's group from its command line.
func classify(pid, self int, cmdline []byte) string {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	cmd := strings.Join(args, " ")
	switch {
	case pid == self:
		return GroupSelf
	case strings.HasSuffix(args[0], "/worker/bootstrap"):
		return GroupWorker
	case strings.HasSuffix(args[0], "/dispatch/bootstrap"):
		return GroupDispatch
	case strings.Contains(cmd, "DynamoDBLocal"):
		return GroupDynamoDB
	case strings.Contains(cmd, "fauxqs"):
		return GroupSQS
	case strings.Contains(cmd, "versitygw"):
		return GroupS3
	}
	return GroupOther
}

// idleSeconds is the machine's idle CPU time (all cores) from /proc/stat.
func idleSeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("benchmark: cpu: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	// cpu user nice system idle iowait …
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("benchmark: cpu: unexpected /proc/stat: %q", line)
	}
	idle, err := strconv.ParseFloat(f[4], 64)
	if err != nil {
		return 0, fmt.Errorf("benchmark: cpu: /proc/stat idle: %w", err)
	}
	return idle / clockTicks, nil
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

// Busiest is the group with the most CPU seconds (idle aside).
func Busiest(lines []ProcessCPU) string {
	lines = slices.Clone(lines)
	lines = slices.DeleteFunc(lines, func(l ProcessCPU) bool { return l.Name == GroupIdle })
	if len(lines) == 0 {
		return ""
	}
	return slices.MaxFunc(lines, func(a, b ProcessCPU) int {
		switch {
		case a.CPUSeconds < b.CPUSeconds:
			return -1
		case a.CPUSeconds > b.CPUSeconds:
			return 1
		}
		return 0
	}).Name
}
