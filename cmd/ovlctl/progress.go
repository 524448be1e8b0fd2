package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether fd is a terminal.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// progressReader draws a progress bar on stderr while it is read (or, as a
// writer, written).
type progressReader struct {
	r     io.Reader
	w     io.Writer
	what  string
	size  int64
	mu    sync.Mutex
	n     int64
	last  time.Time
	drawn bool
}

var lastProgress *progressReader

// withProgress wraps r with a progress bar, only when stderr is a terminal.
func withProgress(what string, r io.Reader, size int64) io.Reader {
	if !isTerminal(2) {
		return r
	}
	finishProgress()
	p := &progressReader{r: r, what: what, size: size}
	lastProgress = p
	return p
}

// withProgressWriter wraps w with a count of the bytes written, drawn on
// stderr only when it is a terminal.
func withProgressWriter(what string, w io.Writer) io.Writer {
	if !isTerminal(2) {
		return w
	}
	finishProgress()
	p := &progressReader{w: w, what: what, size: -1}
	lastProgress = p
	return p
}

func (p *progressReader) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.count(n, err)
	return n, err
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.count(n, err)
	return n, err
}

func (p *progressReader) count(n int, err error) {
	p.mu.Lock()
	p.n += int64(n)
	if time.Since(p.last) > 100*time.Millisecond || err != nil {
		p.last = time.Now()
		p.draw()
	}
	p.mu.Unlock()
}

func (p *progressReader) draw() {
	p.drawn = true
	if p.size <= 0 {
		fmt.Fprintf(os.Stderr, "\r%s: %s", p.what, human(p.n))
		return
	}
	const width = 30
	frac := float64(p.n) / float64(p.size)
	if frac > 1 {
		frac = 1
	}
	fill := int(frac * width)
	fmt.Fprintf(os.Stderr, "\r%s [%s%s] %s / %s", p.what, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), human(p.n), human(p.size))
}

// doneProgress ends the line of r's bar, if it drew one.
func doneProgress(r any) {
	if p, ok := r.(*progressReader); ok && p.drawn {
		p.draw()
		fmt.Fprintln(os.Stderr)
		p.drawn = false
	}
}

func finishProgress() {
	if lastProgress != nil {
		doneProgress(lastProgress)
		lastProgress = nil
	}
}
