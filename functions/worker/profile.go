//go:build fileflowprofile

package main

import "github.com/fileflow/fileflow/pkg/cpuprofile"

// Benchmark builds only (the fileflowprofile tag): CPU profiles to $FILEFLOW_CPUPROFILE.
func init() { cpuprofile.Start("worker") }
