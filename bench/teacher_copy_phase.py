"""Does a pure-copy phase make a trained teacher copy? (a throwaway-sized check, kept so the number reruns)

Continues <work>/run/final on rows of varying-distance copies of code identifiers (span of 8-40
identifiers written twice, packed, AdamW lr 1e-3, 16 x 256, 400 steps) and prints, every 100 steps,
next-token accuracy (first copy, second copy) on 16-identifier spans and on 16-needle-word spans.

Usage: python bench/teacher_copy_phase.py   (reads /work/teacher_work_v3/run/final; does not write it)
"""

import random, torch, time
from transformers import AutoTokenizer, AutoModelForCausalLM
from hydrahead.demo.teacher import code_split
from hydrahead.demo.teacher_data import identifiers
from hydrahead.needles import vocabulary


def main() -> None:
    torch.set_num_threads(2)
    d='/work/teacher_work_v3/run/final'; tok=AutoTokenizer.from_pretrained(d); m=AutoModelForCausalLM.from_pretrained(d)
    names=identifiers(code_split(4000000)[0]); rng=random.Random(0); pad=tok.pad_token_id
    opt=torch.optim.AdamW(m.parameters(),lr=1e-3,weight_decay=0.0)
    def row():
        out=[]
        while True:
            span=tok(" "+" ".join(rng.choice(names) for _ in range(rng.randint(8,40))))["input_ids"]
            doc=span+span+[tok.eos_token_id]
            if len(out)+len(doc)>256: return out+[pad]*(256-len(out))
            out+=doc
    def probe(words,n=16):
        r=random.Random(7); f=s=0
        for _ in range(n):
            a=tok(" "+" ".join(r.choice(words) for _ in range(16)))["input_ids"]; x=torch.tensor([a+a])
            with torch.no_grad(): p=m(input_ids=x).logits[0,:-1].argmax(-1)
            y=x[0,1:]; L=len(a); f+=(p[:L-1]==y[:L-1]).float().mean().item()/n; s+=(p[L:]==y[L:]).float().mean().item()/n
        return round(f,2),round(s,2)
    t=time.time()
    for st in range(401):
        if st%100==0: m.eval(); print(st, "ids",probe(names),"needle",probe(vocabulary()),f"{time.time()-t:.0f}s",flush=True); m.train()
        x=torch.tensor([row() for _ in range(16)]); y=x[:,1:].clone(); y[y==pad]=-100
        loss=torch.nn.functional.cross_entropy(m(input_ids=x).logits[:,:-1].transpose(1,2),y); opt.zero_grad(); loss.backward(); opt.step()


if __name__ == "__main__":
    main()
