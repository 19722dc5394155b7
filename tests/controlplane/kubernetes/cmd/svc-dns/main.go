// Command svc-dns answers DNS queries for Service names the way cluster DNS does for the cases the
// real-node tier needs: an A record <service>.<namespace>.svc.<domain> -> the Service's ClusterIP
// (headless Services: their ready endpoint addresses). Everything else is NXDOMAIN: the machine is
// offline, so there is nothing to forward to. It stands in for CoreDNS; UDP only.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	listen := flag.String("listen", "127.0.0.1:53", "UDP address to serve on")
	domain := flag.String("domain", "cluster.local", "cluster domain")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	factory := informers.NewSharedInformerFactory(client, 30*time.Minute)
	services := factory.Core().V1().Services().Lister()
	slices := factory.Discovery().V1().EndpointSlices().Lister()
	ctx := context.Background()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	conn, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving %s on %s", *domain, *listen)
	suffix := ".svc." + strings.TrimSuffix(*domain, ".") + "."
	lookup := func(name string) ([]netip.Addr, bool) {
		name = strings.ToLower(name)
		if !strings.HasSuffix(name, suffix) {
			return nil, false
		}
		parts := strings.Split(strings.TrimSuffix(name, suffix), ".")
		if len(parts) != 2 {
			return nil, false
		}
		svc, err := services.Services(parts[1]).Get(parts[0])
		if err != nil {
			return nil, false
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
			return []netip.Addr{ip}, err == nil
		}
		var out []netip.Addr
		sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
		list, _ := slices.EndpointSlices(svc.Namespace).List(sel)
		for _, s := range list {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				for _, a := range e.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						out = append(out, ip)
					}
				}
			}
		}
		return out, true
	}
	buf := make([]byte, 1500)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			continue
		}
		var p dnsmessage.Parser
		hdr, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		ips, found := lookup(q.Name.String())
		rh := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: found, RecursionDesired: hdr.RecursionDesired}
		if !found {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			for _, ip := range ips {
				if ip.Is4() {
					_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5},
						dnsmessage.AResource{A: ip.As4()})
				}
			}
		}
		msg, err := b.Finish()
		if err == nil {
			_, _ = conn.WriteTo(msg, addr)
		}
	}
}
