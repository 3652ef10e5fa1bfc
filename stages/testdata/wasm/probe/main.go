// Command probe is a test plugin for the wasm stage. Each input line is a
// command; the answer is one line:
//
//	exit N      exit with code N without answering
//	panic       panic (the Go runtime exits with code 2)
//	loop        spin forever
//	sleep D     sleep for duration D, then answer "slept"
//	silent      answer nothing, then read on
//	two         answer two lines
//	open PATH   answer "ok: CONTENT" or "error: ..."
//	create PATH answer "ok" or "error: ..." after trying to write PATH
//	dial ADDR   answer "ok" or "error: ..." after trying a TCP connection
//	env NAME    answer the variable's value
//	args        answer the arguments after the program name, space-separated
//	stderr N    write N bytes to stderr, then answer "ok"
//	alloc N     allocate and touch N MiB, then answer "ok" (and let it go)
//	hog         allocate and touch memory, 1 MiB at a time, without end
//	anything else is answered upper-cased.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	for in.Scan() {
		verb, arg, _ := strings.Cut(in.Text(), " ")
		switch verb {
		case "exit":
			code, _ := strconv.Atoi(arg)
			os.Exit(code)
		case "panic":
			panic("probe asked to panic")
		case "loop":
			for n := 0; ; n++ {
				_ = n
			}
		case "sleep":
			d, _ := time.ParseDuration(arg)
			time.Sleep(d)
			fmt.Println("slept")
		case "silent":
		case "two":
			fmt.Println("one")
			fmt.Println("two")
		case "open":
			b, err := os.ReadFile(arg)
			answer(strings.TrimSpace(string(b)), err)
		case "create":
			answer("", os.WriteFile(arg, []byte("written\n"), 0o644))
		case "dial":
			c, err := net.Dial("tcp", arg)
			if err == nil {
				c.Close()
			}
			answer("", err)
		case "env":
			fmt.Println(os.Getenv(arg))
		case "args":
			fmt.Println(strings.Join(os.Args[1:], " "))
		case "stderr":
			n, _ := strconv.Atoi(arg)
			os.Stderr.WriteString(strings.Repeat("e", n))
			fmt.Println("ok")
		case "alloc":
			n, _ := strconv.Atoi(arg)
			held := make([][]byte, n)
			for i := range held {
				held[i] = touched(1 << 20)
			}
			fmt.Println("ok")
		case "hog":
			var held [][]byte
			for {
				held = append(held, touched(1<<20))
			}
		default:
			fmt.Println(strings.ToUpper(in.Text()))
		}
	}
}

// touched returns n bytes whose every page has been written.
func touched(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	return b
}

func answer(s string, err error) {
	if err != nil {
		fmt.Println("error:", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Println("ok:", s)
}
