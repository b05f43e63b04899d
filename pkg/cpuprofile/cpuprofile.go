// Package cpuprofile lets a function's process write CPU profiles for the benchmarks: a
// function built with the `fileflowprofile` build tag calls [Start] from an init (see
// functions/*/profile.go). Deployed zips are built without the tag and hold none of it.
package cpuprofile

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"
)

// Env names the directory the profiles go to; unset, Start does nothing.
const Env = "FILEFLOW_CPUPROFILE"

// Window is how long each profile covers: a process killed when the local stack stops
// loses at most its last window.
const Window = 2 * time.Second

// Start writes CPU profiles to $FILEFLOW_CPUPROFILE/<name>-<pid>-<n>.pprof, one per
// Window, for the life of the process. Errors end the profiling with a line on stderr.
func Start(name string) {
	dir := os.Getenv(Env)
	if dir == "" {
		return
	}
	go func() {
		for n := 0; ; n++ {
			path := filepath.Join(dir, fmt.Sprintf("%s-%d-%04d.pprof", name, os.Getpid(), n))
			f, err := os.Create(path)
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "cpuprofile: %v\n", err)
				return
			}
			time.Sleep(Window)
			pprof.StopCPUProfile()
			f.Close()
		}
	}()
}
