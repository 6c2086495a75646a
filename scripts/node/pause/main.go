// The pod sandbox's process: holds the pod's namespaces open and does nothing else until the
// kubelet stops the sandbox. Built by scripts/kube-node into the pause image (FROM scratch).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
