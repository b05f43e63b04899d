// Package procs sizes the Go scheduler to the CPU a Lambda function is given.
//
// "Lambda allocates CPU power in proportion to the amount of memory configured. ... At
// 1,769 MB, a function has the equivalent of one vCPU (one vCPU-second of credits per
// second)" (AWS Lambda developer guide, "Configure Lambda function memory",
// https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html). The microVM
// still shows two CPUs from 128 to 3,008 MB (measured by github.com/rwnx/lambda-cpuinfo),
// so the Go runtime starts with GOMAXPROCS=2 and spends part of a fraction of one vCPU
// waking, spinning and stealing between two Ps. A handler below one vCPU's worth of
// memory does its work on one P.
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

// Set sets GOMAXPROCS from AWS_LAMBDA_FUNCTION_MEMORY_SIZE, which the Lambda runtime
// sets for every function. It does nothing outside Lambda (the variable unset or not a
// number) or when GOMAXPROCS is set in the environment: the operator's value wins. It
// returns the GOMAXPROCS in effect and whether it changed it.
func Set(getenv func(string) string) (int, bool) {
	if getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0), false
	}
	mem, err := strconv.Atoi(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	if err != nil || mem <= 0 {
		return runtime.GOMAXPROCS(0), false
	}
	n := ForMemory(mem, runtime.NumCPU())
	if n == runtime.GOMAXPROCS(0) {
		return n, false
	}
	runtime.GOMAXPROCS(n)
	return n, true
}
