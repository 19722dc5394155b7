// Command etcd is the upstream etcd server, built from the go.etcd.io/etcd/server/v3 module.
//
// It lives in its own module so that etcd's dependency versions never fight with the
// Kubernetes ones in ../kubernetes.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
