package registry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	awssession "github.com/aws/aws-sdk-go/aws/session"
	"github.com/distribution/distribution/v3/configuration"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws" // the "s3aws" storage driver
)

// s3DriverName is the name distribution's s3-aws driver registers under.
const s3DriverName = "s3aws"

// S3Storage is where a registry on S3 keeps its data: a bucket, a key
// prefix inside it, and how to reach it. Empty fields are filled from the
// AWS SDK's usual environment by Resolve.
type S3Storage struct {
	Bucket string
	// Prefix is the key prefix (no leading or trailing slash); empty is the
	// bucket's root.
	Prefix string
	// Endpoint is an S3-compatible endpoint URL (http:// or https://); with
	// one, requests use path-style addressing. Empty is AWS itself.
	Endpoint string
	Region   string
	// AccessKey and SecretKey, when both set, are used as they are; when
	// empty, the AWS SDK's default chain finds them (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, instance
	// roles).
	AccessKey string
	SecretKey string
}

// ParseS3URL parses s3://BUCKET[/PREFIX].
func ParseS3URL(s string) (S3Storage, error) {
	u, err := url.Parse(s)
	if err != nil {
		return S3Storage{}, fmt.Errorf("parsing storage URL %q: %w", s, err)
	}
	if u.Scheme != "s3" {
		return S3Storage{}, fmt.Errorf("storage URL %q: want s3://BUCKET/PREFIX", s)
	}
	if u.Host == "" {
		return S3Storage{}, fmt.Errorf("storage URL %q: no bucket", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return S3Storage{}, fmt.Errorf("storage URL %q: want s3://BUCKET/PREFIX and nothing else", s)
	}
	return S3Storage{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}, nil
}

// String is the storage's s3:// URL.
func (s S3Storage) String() string {
	if s.Prefix == "" {
		return "s3://" + s.Bucket
	}
	return "s3://" + s.Bucket + "/" + s.Prefix
}

// Resolve fills the empty endpoint and region as the AWS SDK finds them:
// the endpoint from AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL; the region
// from AWS_REGION, AWS_DEFAULT_REGION, then the AWS_PROFILE's region in
// ~/.aws/config (AWS_CONFIG_FILE), then us-east-1 when an endpoint is given
// (S3 look-alikes rarely care). Credentials are left to the SDK's chain.
func (s S3Storage) Resolve() (S3Storage, error) {
	if s.Endpoint == "" {
		s.Endpoint = firstEnv("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	if s.Region == "" {
		sess, err := awssession.NewSessionWithOptions(awssession.Options{SharedConfigState: awssession.SharedConfigEnable})
		if err != nil {
			return s, fmt.Errorf("reading the AWS configuration: %w", oneLine(err))
		}
		s.Region = aws.StringValue(sess.Config.Region)
	}
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return s, fmt.Errorf("S3 endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", s.Endpoint)
		}
		if s.Region == "" {
			s.Region = "us-east-1"
		}
	}
	if s.Region == "" {
		return s, errors.New("no S3 region: set AWS_REGION (or AWS_ENDPOINT_URL for an S3-compatible store)")
	}
	if (s.AccessKey == "") != (s.SecretKey == "") {
		return s, errors.New("S3 credentials: give both the access key and the secret key, or neither")
	}
	return s, nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// parameters are the s3-aws driver's parameters for s (already resolved).
func (s S3Storage) parameters() configuration.Parameters {
	p := configuration.Parameters{
		"bucket": s.Bucket,
		"region": s.Region,
		// Several replicas share the bucket; the default STANDARD class is
		// what AWS uses anyway, and NONE keeps S3 look-alikes that reject the
		// header working.
		"storageclass": "NONE",
		"loglevel":     "off",
	}
	if s.Prefix != "" {
		p["rootdirectory"] = "/" + s.Prefix
	}
	if s.Endpoint != "" {
		p["regionendpoint"] = s.Endpoint
		p["forcepathstyle"] = true
		p["secure"] = strings.HasPrefix(s.Endpoint, "https://")
	}
	if s.AccessKey != "" {
		p["accesskey"] = s.AccessKey
		p["secretkey"] = s.SecretKey
	}
	return p
}

// checkS3 makes one request to the bucket so that a wrong endpoint, bucket
// or credentials fail at start, not on the first push.
func checkS3(ctx context.Context, s S3Storage) error {
	d, err := factory.Create(ctx, s3DriverName, s.parameters())
	if err != nil {
		return fmt.Errorf("configuring S3 storage %s: %w", s, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := d.Stat(ctx, "/"); err != nil {
		var notFound storagedriver.PathNotFoundError
		if !errors.As(err, &notFound) {
			return fmt.Errorf("reaching S3 storage %s: %w", s, oneLine(err))
		}
	}
	return nil
}

// oneLine flattens the AWS SDK's multi-line error text (code, message,
// then "status code: 403, request id: ...") into one line.
func oneLine(err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}
