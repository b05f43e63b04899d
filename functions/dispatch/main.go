// Command dispatch is the job dispatcher Lambda (provided.al2023): SQS-triggered from
// the jobs queue, it turns jobs into file task messages with dispatch.Handler.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/fileflow/fileflow/pkg/dispatch"
	"github.com/fileflow/fileflow/pkg/fnenv"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/procs"
)

func main() {
	log := lambdacontext.NewLogger()
	slog.SetDefault(log)
	procs.Set(os.Getenv) // the CPU the function's memory buys, not the CPUs it sees
	h, err := newHandler(context.Background(), log)
	if err != nil {
		log.Error("dispatcher cannot start", "error", err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lambda.StartHandlerFunc(h.Handle)
}

func newHandler(ctx context.Context, log *slog.Logger) (*dispatch.Handler, error) {
	common, err := fnenv.Parse(os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("dispatch: invalid configuration: %w", err)
	}
	cfg, err := dispatch.ConfigFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatch: aws config: %w", err)
	}
	objects := s3.NewFromConfig(awsCfg)
	queue := sqs.NewFromConfig(awsCfg)
	store := ledger.New(dynamodb.NewFromConfig(awsCfg), common.Table, common.LedgerTTL)
	engine := &job.Engine{Ledger: store, Objects: objects, Topic: sns.NewFromConfig(awsCfg), TopicARN: common.CompletionTopic,
		OutputBucket: common.OutputBucket, OutputPrefix: common.OutputPrefix, Log: log,
		Queue: queue, JobsQueueURL: cfg.JobsQueueURL}
	return dispatch.New(cfg, dispatch.Deps{Objects: objects, Queue: queue, Ledger: store, Jobs: engine, Logger: log})
}
