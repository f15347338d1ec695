// Command testapp is the stand-in app the inference tests run under the
// process and docker executors. argv[1] picks a behaviour; "app <name>"
// runs a built-in app through apps.Run exactly as "swarmgen app" does.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/swarmgen/swarmgen/inference/apps"
)

func main() {
	if len(os.Args) < 2 {
		fatal("usage: testapp <behaviour> [args]")
	}
	out := os.Getenv("SWARMGEN_OUTPUT")
	arg := func(i int) string {
		if len(os.Args) <= i {
			fatal("missing argument %d", i)
		}
		return os.Args[i]
	}
	switch os.Args[1] {
	case "app":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := apps.Run(ctx, arg(2), os.Stdout); err != nil {
			fatal("%v", err)
		}
	case "ok":
		fmt.Println("::progress 0.5")
		must(os.WriteFile(filepath.Join(out, "ok.txt"), []byte("hello\n"), 0o644))
		fmt.Fprintln(os.Stderr, "done on stderr")
	case "exit":
		n, _ := strconv.Atoi(arg(2))
		fmt.Fprintln(os.Stderr, "exiting with", n)
		os.Exit(n)
	case "sleep":
		d, err := time.ParseDuration(arg(2))
		must(err)
		fmt.Println("sleeping")
		time.Sleep(d)
	case "tree":
		// A child that sleeps, recorded in output/child.pid; with
		// "stubborn" this process ignores SIGTERM.
		if len(os.Args) > 2 && os.Args[2] == "stubborn" {
			signal.Ignore(syscall.SIGTERM)
		}
		exe, _ := os.Executable()
		c := exec.Command(exe, "sleep", "1h")
		must(c.Start())
		must(os.WriteFile(filepath.Join(out, "child.pid"), []byte(strconv.Itoa(c.Process.Pid)), 0o644))
		fmt.Println("started child", c.Process.Pid)
		time.Sleep(time.Hour)
	case "background":
		// Exit 0 at once but leave a sleeping child behind.
		exe, _ := os.Executable()
		c := exec.Command(exe, "sleep", "1h")
		must(c.Start())
		must(os.WriteFile(filepath.Join(out, "child.pid"), []byte(strconv.Itoa(c.Process.Pid)), 0o644))
	case "progress":
		fmt.Println("::progress 0.25")
		fmt.Println("::progress garbage")
		fmt.Println("::progress 7")
		fmt.Println("::progress NaN")
		fmt.Println("::progress " + strings.Repeat("1", 1000))
		fmt.Println("::progress -3")
		fmt.Print("::progress 0.75") // no newline at the end
	case "spam":
		n, _ := strconv.Atoi(arg(2))
		line := strings.Repeat("x", 99) + "\n"
		for i := 0; i < n/100; i++ {
			os.Stdout.WriteString(line)
		}
		fmt.Println("THE-END")
	case "bigout":
		n, _ := strconv.Atoi(arg(2))
		must(os.WriteFile(filepath.Join(out, "big.bin"), make([]byte, n), 0o644))
	case "symlink":
		must(os.Symlink("/etc/passwd", filepath.Join(out, "passwd")))
	case "env":
		env := os.Environ()
		wd, _ := os.Getwd()
		env = append(env, "CWD="+wd)
		must(os.WriteFile(filepath.Join(out, "env.txt"), []byte(strings.Join(env, "\n")+"\n"), 0o644))
	case "whoami":
		fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
		must(os.WriteFile(filepath.Join(out, "whoami.txt"), []byte(fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())), 0o644))
	case "writeroot":
		if err := os.WriteFile("/evil", []byte("x"), 0o644); err == nil {
			fatal("wrote to / : rootfs is writable")
		} else {
			fmt.Println("root write failed:", err)
		}
		must(os.WriteFile("/tmp/scratch", []byte("x"), 0o644))
		fmt.Println("tmp write ok")
	case "nonet":
		ifs, _ := net.Interfaces()
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		fmt.Println("interfaces:", strings.Join(names, ","))
		conn, err := net.DialTimeout("tcp", "1.1.1.1:53", 2*time.Second)
		if err == nil {
			conn.Close()
			fatal("dial 1.1.1.1:53 succeeded: network is reachable")
		}
		fmt.Println("dial failed:", err)
	case "gpu":
		// The nvidia runtime injects /dev/nvidia<N> for each GPU granted.
		ents, err := os.ReadDir("/dev")
		must(err)
		n := 0
		for _, e := range ents {
			if name := e.Name(); strings.HasPrefix(name, "nvidia") && len(name) > 6 && name[6] >= '0' && name[6] <= '9' {
				fmt.Println("gpu device: /dev/" + name)
				n++
			}
		}
		if n == 0 {
			fatal("no /dev/nvidia<N> device in the container")
		}
	case "oom":
		mib, _ := strconv.Atoi(arg(2))
		var keep [][]byte
		for i := 0; i < mib; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
	default:
		fatal("unknown behaviour %q", os.Args[1])
	}
}

func must(err error) {
	if err != nil {
		fatal("%v", err)
	}
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "testapp: "+f+"\n", a...)
	os.Exit(1)
}
