"""`hydrahead demo`: the whole path (score, plan, convert, distill, evaluate) at small scale on the shipped teacher,
and the teacher's own recipe and trainer (`teacher_training`). Entry point: `hydrahead.demo.pipeline.run`."""
