package archive

import "testing"

func TestRegistryURL(t *testing.T) {
	for _, tc := range []struct {
		url, host, want string
	}{
		{"127.0.0.1:5000", "", "127.0.0.1:5000"},
		{"127.0.0.1:5000", "127.0.0.1:6000", "127.0.0.1:6000"},
		{"http://127.0.0.1:5000", "mirror:443", "http://mirror:443"},
		{"https://reg.example/v2/", "mirror", "https://mirror/v2/"},
		{"reg.example/ns", "mirror", "mirror/ns"},
	} {
		if got := registryURL(tc.url, tc.host); got != tc.want {
			t.Errorf("registryURL(%q, %q) = %q, want %q", tc.url, tc.host, got, tc.want)
		}
	}
}

func TestWithRegistryHost(t *testing.T) {
	for _, tc := range []struct {
		host    string
		wantErr bool
	}{
		{"", false},
		{"127.0.0.1:5001", false},
		{"mirror.example", false},
		{"mirror.example/ns", true},
		{"user@mirror", true},
		{":5000", true},
	} {
		var so storageOptions
		err := WithRegistryHost(tc.host)(&so)
		if (err != nil) != tc.wantErr {
			t.Errorf("WithRegistryHost(%q) = %v, want error %v", tc.host, err, tc.wantErr)
		}
	}
}
