// Package procs sizes the Go scheduler to the CPU a Lambda function is given.
//
// "Lambda allocates CPU power in proportion to the amount of memory configured. ... At
// 1,769 MB, a function has the equivalent of one vCPU (one vCPU-second of credits per
// second)" (AWS Lambda developer guide, "Configure Lambda function memory",
// https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html). The environment
// still shows two CPUs from 128 to 3,008 MB (a third-party measurement,
// github.com/rwnx/lambda-cpuinfo, not AWS's word), so the Go runtime starts with
// GOMAXPROCS=2 on a fraction of one vCPU. In the local pipeline's CPU profiles
// (docs/performance.md) the worker processes' scheduler share (runtime.mcall and futex)
// was 5.0% with one P and 8.9% with two; end to end the difference was within the run's
// noise. Only memory up to 1,769 MB (2 → 1 P) and from 3,009 to 3,538 MB (3 → 2) changes.
package procs

import (
	"runtime"
	"strconv"
)

// MBPerVCPU is the memory that buys one vCPU of Lambda CPU.
const MBPerVCPU = 1769

// ForMemory is the GOMAXPROCS for a function of memMB megabytes on a machine of ncpu
// CPUs: the vCPUs its memory buys, rounded up, at least 1 and at most ncpu.
func ForMemory(memMB, ncpu int) int {
	n := (memMB + MBPerVCPU - 1) / MBPerVCPU
	return max(1, min(n, ncpu))
}

// Set lowers GOMAXPROCS to ForMemory(AWS_LAMBDA_FUNCTION_MEMORY_SIZE), which the Lambda
// runtime sets for every function; it never raises it (the runtime's own default may
// already follow a container's CPU limit). It does nothing outside Lambda (the variable
// unset or not a number), when GOMAXPROCS is set in the environment (the operator's value
// wins), or when the environment runs several invocations at once
// (AWS_LAMBDA_MAX_CONCURRENCY > 1, Lambda Managed Instances, whose memory per vCPU is 2 to
// 8 GiB and not 1,769 MB). It returns the GOMAXPROCS in effect and whether it changed it.
func Set(getenv func(string) string) (int, bool) {
	cur := runtime.GOMAXPROCS(0)
	if getenv("GOMAXPROCS") != "" {
		return cur, false
	}
	if c, err := strconv.Atoi(getenv("AWS_LAMBDA_MAX_CONCURRENCY")); err == nil && c > 1 {
		return cur, false
	}
	mem, err := strconv.Atoi(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	if err != nil || mem <= 0 {
		return cur, false
	}
	n := min(ForMemory(mem, runtime.NumCPU()), cur)
	if n == cur {
		return cur, false
	}
	runtime.GOMAXPROCS(n)
	return n, true
}
