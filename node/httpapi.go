package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/swarmgen/swarmgen/api"
)

// startAPI serves the HTTP API on cfg.API.
func (n *Node) startAPI() error {
	ln, err := net.Listen("tcp", n.cfg.API)
	if err != nil {
		return fmt.Errorf("api listen %s: %w", n.cfg.API, err)
	}
	n.apiAddr = ln.Addr()
	n.apiServer = &http.Server{
		Handler:           n.apiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		// A request body (≤ 1 MiB) that trickles in, or a kept-alive
		// connection left idle, does not hold a connection for good. No
		// WriteTimeout: job events stream for as long as a job runs (their
		// writes have deadlines of their own).
		ReadTimeout:    time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	n.goRun("api", func(ctx context.Context) {
		if err := n.apiServer.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("api server", "err", err)
		}
	})
	return nil
}

func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Info())
	})
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Peers())
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		stats := map[string]any{
			"adsAccepted": n.adStats.Accepted.Load(),
			"adsStale":    n.adStats.Stale.Load(),
			"adsRejected": n.adStats.Rejected(),
			"syncFaults":  n.adStats.SyncFaults.Load(),
			"tablePeers":  n.table.Len(),
			"connected":   len(n.host.Network().Peers()),
		}
		if n.results != nil {
			stats["resultsInline"] = n.results.inlined.Load()
			stats["resultsFetched"] = n.results.fetched.Load()
		}
		writeJSON(w, http.StatusOK, stats)
	})
	for _, reg := range n.routes {
		reg(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path), "")
	})
	return recoverMiddleware(n.log, mux)
}

// recoverMiddleware turns a handler panic into a 500 so one bad request
// cannot take the node down.
func recoverMiddleware(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				log.Error("api handler panicked", "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, "internal error", "")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg, field string) {
	writeJSON(w, code, api.Error{Message: msg, Field: field})
}
