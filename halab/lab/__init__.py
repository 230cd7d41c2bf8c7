"""The machines: the lab's fixed shape (topology), its network namespace and links
(net), the nspawn nodes and their image (nodes, image), the power switch the fence
agent calls (fenced), the one lock every change holds (lock), the whole lab's up,
down and faults (ops), and running host commands (run). Nothing here knows Pacemaker
or the inventory; everything above builds on it."""
