// Command fake-gpu-plugin is a Kubernetes device plugin (deviceplugin/v1beta1) that advertises
// nvidia.com/gpu devices which do not exist, so that GPU-requesting pods are admitted and counted by a
// real kubelet on a machine without GPUs. Allocate hands a container NVIDIA_VISIBLE_DEVICES and nothing
// else: no device nodes, no driver.
//
// The kubelet removes every plugin socket when it restarts; the plugin notices that its socket is gone
// (or the kubelet's socket was recreated) and serves and registers again.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
	stop    chan struct{}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	select {
	case <-p.stop:
	case <-stream.Context().Done():
	}
	return nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ",")},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on socket, registers with the kubelet and returns the server once registered.
func serve(dir, socket, resource string, p *plugin) (*grpc.Server, error) {
	path := filepath.Join(dir, socket)
	_ = os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: socket, ResourceName: resource,
	})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return srv, nil
}

func inode(path string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

func main() {
	count := flag.Int("count", 4, "devices to advertise")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	socket := flag.String("socket", "stratos-fake-gpu.sock", "this plugin's socket name in dir")
	flag.Parse()
	p := &plugin{stop: make(chan struct{})}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("fake-gpu-%d", i), Health: pluginapi.Healthy})
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	var srv *grpc.Server
	var kubelet uint64
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		ownGone := inode(filepath.Join(*dir, *socket)) == 0
		if now := inode(filepath.Join(*dir, "kubelet.sock")); now != 0 && (srv == nil || now != kubelet || ownGone) {
			if srv != nil {
				close(p.stop)
				srv.Stop()
				p.stop = make(chan struct{})
				srv = nil
			}
			var err error
			if srv, err = serve(*dir, *socket, *resource, p); err != nil {
				log.Printf("register: %v (retrying)", err)
			} else {
				kubelet = now
				log.Printf("registered %d x %s", *count, *resource)
			}
		}
		select {
		case <-signals:
			if srv != nil {
				srv.Stop()
			}
			_ = os.Remove(filepath.Join(*dir, *socket))
			return
		case <-tick.C:
		}
	}
}
