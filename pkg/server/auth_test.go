package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// A page on another site must not trigger or cancel runs, with or without a
// token: browsers send Origin (and Sec-Fetch-Site) on such requests.
func TestAuthRefusesCrossSiteRequests(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	for _, token := range []string{"", "secret"} {
		s := &Server{opts: Options{Token: token}}
		h := s.auth(ok)
		for _, c := range []struct {
			name    string
			headers map[string]string
			want    int
		}{
			{"command line", map[string]string{}, http.StatusAccepted},
			{"same origin", map[string]string{"Origin": "http://127.0.0.1:8080"}, http.StatusAccepted},
			{"same origin, fetch metadata", map[string]string{"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, http.StatusAccepted},
			{"other site", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
			{"other port", map[string]string{"Origin": "http://127.0.0.1:9999"}, http.StatusForbidden},
			{"cross-site, no origin", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
			{"null origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
		} {
			r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/runs/last/cancel", nil)
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			if token != "" {
				r.Header.Set("Authorization", "Bearer "+token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Errorf("token %q, %s: status %d, want %d (%s)", token, c.name, w.Code, c.want, w.Body)
			}
		}
	}
}
