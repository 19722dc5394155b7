// Command pause is the sandbox ("pause") container of the real-node tier: it holds a pod's namespaces
// open, reaps orphaned children, and exits 0 on SIGINT or SIGTERM. Built static (CGO_ENABLED=0) and
// packed FROM scratch, because no registry with registry.k8s.io/pause is reachable here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s == syscall.SIGCHLD {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
