package registry

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/distribution/distribution/v3/configuration"
)

func TestParseS3URL(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    S3Storage
		str     string // want.String()
		wantErr bool
	}{
		{in: "s3://bucket", want: S3Storage{Bucket: "bucket"}, str: "s3://bucket"},
		{in: "s3://bucket/", want: S3Storage{Bucket: "bucket"}, str: "s3://bucket"},
		{in: "s3://bucket/a/b/", want: S3Storage{Bucket: "bucket", Prefix: "a/b"}, str: "s3://bucket/a/b"},
		{in: "s3:///prefix", wantErr: true},
		{in: "http://bucket/prefix", wantErr: true},
		{in: "bucket/prefix", wantErr: true},
		{in: "s3://bucket/p?x=1", wantErr: true},
		{in: "s3://user@bucket/p", wantErr: true},
	} {
		got, err := ParseS3URL(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseS3URL(%q) error = %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseS3URL(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.str && !tc.wantErr {
			t.Errorf("ParseS3URL(%q).String() = %q, want %q", tc.in, got.String(), tc.str)
		}
	}
}

func TestS3StorageResolve(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		in      S3Storage
		want    S3Storage
		wantErr bool
	}{
		{
			name: "AWS region from the environment",
			env:  map[string]string{"AWS_REGION": "eu-west-1"},
			in:   S3Storage{Bucket: "b"},
			want: S3Storage{Bucket: "b", Region: "eu-west-1"},
		},
		{
			name: "AWS_DEFAULT_REGION when AWS_REGION is unset",
			env:  map[string]string{"AWS_DEFAULT_REGION": "us-west-2"},
			in:   S3Storage{Bucket: "b"},
			want: S3Storage{Bucket: "b", Region: "us-west-2"},
		},
		{
			name: "endpoint from AWS_ENDPOINT_URL, default region",
			env:  map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
			in:   S3Storage{Bucket: "b"},
			want: S3Storage{Bucket: "b", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1"},
		},
		{
			name: "AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL",
			env:  map[string]string{"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "https://s3.example:443"},
			in:   S3Storage{Bucket: "b"},
			want: S3Storage{Bucket: "b", Endpoint: "https://s3.example:443", Region: "us-east-1"},
		},
		{
			name: "given fields win over the environment",
			env:  map[string]string{"AWS_ENDPOINT_URL": "http://a:1", "AWS_REGION": "eu-west-1"},
			in:   S3Storage{Bucket: "b", Endpoint: "http://b:2", Region: "ap-south-1"},
			want: S3Storage{Bucket: "b", Endpoint: "http://b:2", Region: "ap-south-1"},
		},
		{
			name: "region of the AWS_PROFILE in the config file",
			env:  map[string]string{"AWS_PROFILE": "other", "AWS_CONFIG_FILE": "testdata/aws-config"},
			in:   S3Storage{Bucket: "b"},
			want: S3Storage{Bucket: "b", Region: "ap-northeast-1"},
		},
		{
			name: "AWS_REGION wins over the config file",
			env:  map[string]string{"AWS_REGION": "eu-west-1", "AWS_CONFIG_FILE": "testdata/aws-config"},
			in:   S3Storage{Bucket: "b"},
			want: S3Storage{Bucket: "b", Region: "eu-west-1"},
		},
		{name: "no region, no endpoint", in: S3Storage{Bucket: "b"}, wantErr: true},
		{name: "endpoint without scheme", env: map[string]string{"AWS_ENDPOINT_URL": "127.0.0.1:9000"}, in: S3Storage{Bucket: "b"}, wantErr: true},
		{name: "access key without secret", env: map[string]string{"AWS_REGION": "eu-west-1"}, in: S3Storage{Bucket: "b", AccessKey: "a"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"} {
				t.Setenv(k, tc.env[k])
			}
			config := tc.env["AWS_CONFIG_FILE"]
			if config == "" {
				config = os.DevNull
			}
			t.Setenv("AWS_CONFIG_FILE", config)
			t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
			got, err := tc.in.Resolve()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Resolve() error = %v, want error %t", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Resolve() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestS3StorageParameters(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   S3Storage
		want configuration.Parameters
	}{
		{
			name: "AWS with the SDK's credentials",
			in:   S3Storage{Bucket: "b", Region: "eu-west-1"},
			want: configuration.Parameters{"bucket": "b", "region": "eu-west-1", "storageclass": "NONE", "loglevel": "off"},
		},
		{
			name: "S3-compatible endpoint: path style, plain HTTP, static keys, prefix",
			in:   S3Storage{Bucket: "b", Prefix: "reg/x", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", AccessKey: "a", SecretKey: "s"},
			want: configuration.Parameters{
				"bucket": "b", "region": "us-east-1", "storageclass": "NONE", "loglevel": "off",
				"rootdirectory": "/reg/x", "regionendpoint": "http://127.0.0.1:9000", "forcepathstyle": true, "secure": false,
				"accesskey": "a", "secretkey": "s",
			},
		},
		{
			name: "HTTPS endpoint is secure",
			in:   S3Storage{Bucket: "b", Endpoint: "https://s3.example", Region: "us-east-1"},
			want: configuration.Parameters{
				"bucket": "b", "region": "us-east-1", "storageclass": "NONE", "loglevel": "off",
				"regionendpoint": "https://s3.example", "forcepathstyle": true, "secure": true,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.in.parameters()); diff != "" {
				t.Errorf("parameters() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
