from nlp_rnn.cli import entry

entry()
