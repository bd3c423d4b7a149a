"""Synthetic QA for unannotated paragraphs: spaCy answer candidates → cloze / seq2seq questions →
roundtrip filter and unanswerable negatives → DevRev CSV (`metaqa synth`)."""
